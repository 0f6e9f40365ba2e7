"""The service's settings, read from TASKTRAIL_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKTRAIL_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./var/tasktrail.sqlite",
        description="memory://, sqlite:///path or postgresql://user[:pw]@host[:port]/db",
    )
    admin_token: str | None = Field(
        default=None, description="The platform administrator's bearer token."
    )
    var_dir: Path = Field(default=Path("var"), description="Where generated secrets are kept.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    rate_limit_per_second: float = Field(
        default=2000,
        ge=0,
        description="Requests a second each bearer token may make, per process (0: no limit).",
    )
    rate_limit_burst: int = Field(
        default=4000, ge=1, description="Requests a token may make at once before the rate applies."
    )
    rate_limit_auth_failures_per_second: float = Field(
        default=20,
        ge=0,
        description="Failed authentications (401) a second allowed per client address, per "
        "process, before its unknown tokens are answered 429 (0: no limit).",
    )
    rate_limit_auth_failures_burst: int = Field(default=200, ge=1)
    log_level: str = "info"
    run_projections: bool = Field(
        default=True,
        description="Run the projection runners in this process (one process at a time "
        "works on each projection: the others stand by).",
    )
    create_tables: bool = Field(
        default=True,
        description="Create missing tables when opening the store. `tasktrail serve` and "
        "`worker` migrate once under a lock at start and then turn this off.",
    )
    projection_batch_size: int = Field(default=500, ge=1, le=10_000)
    min_position_timeout_seconds: float = Field(
        default=5.0, ge=0, le=60, description="How long a read waits for `min_position`."
    )
    sse_heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="Idle time after which an event stream sends a comment."
    )
    log_max_bytes_per_step: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="The most log text kept per step (bytes); what an append brings past "
        "it is refused and recorded as refused (`LogTruncated`), never dropped silently.",
    )
    log_poll_seconds: float = Field(
        default=0.1, gt=0, le=5, description="How often a live log stream looks for new chunks."
    )
    log_follow_grace_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="How long a live log stream still waits for late chunks once its step "
        "is terminal, before it ends.",
    )
    signing_key: Path | None = Field(
        default=None,
        description="The Ed25519 private key (PKCS #8 PEM) checkpoints are signed with; "
        "default `<var_dir>/signing-key`, generated (mode 0600) when missing.",
    )
    checkpoint_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often each org with new task events gets a signed checkpoint.",
    )
    previous_public_keys: list[str] = Field(
        default_factory=list,
        description="Public keys (base64, raw Ed25519) of earlier signing keys, as a JSON "
        "list: still listed by `/v1/signing-keys` and trusted by `verify` after a key change.",
    )
