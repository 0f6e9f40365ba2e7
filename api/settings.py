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
    log_level: str = "info"
