"""The long-lived objects one service process shares: built once, in the lifespan."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from uuid import UUID

from api.admin_token import read_admin_token
from api.settings import Settings
from domain.application import TaskLedger
from domain.checkpoint_application import Checkpoints
from domain.log_application import StepLogs
from integrity.signing import PublicKey, SigningKey, load_signing_key
from projections.checkpoint_writer import CHECKPOINT_WRITER, CheckpointWriter
from projections.runtime import Projections
from store.config import StoreConfig

SIGNING_KEY_FILE = "signing-key"


@dataclass
class Services:
    settings: Settings
    store: StoreConfig
    ledger: TaskLedger
    admin_token: str | None
    # Steps' logs: their own application, table (SQLite: file) apart from the tasks.
    logs: StepLogs
    # Keyed requests being processed by this process: a concurrent duplicate gets 409.
    in_flight: set[UUID] = field(default_factory=set)
    in_flight_lock: threading.Lock = field(default_factory=threading.Lock)
    # The read models; their runners run here only after `projections.start()`.
    projections: Projections | None = None
    # Signed checkpoints: their own application and table; the key that signs them.
    checkpoints: Checkpoints | None = None
    signing_key: SigningKey | None = None
    checkpoint_writer: CheckpointWriter | None = None

    @classmethod
    def start(cls, settings: Settings) -> Services:
        store = replace(
            StoreConfig.from_url(settings.database_url), create_tables=settings.create_tables
        )
        ledger = TaskLedger(store.env("tasks"))
        try:
            logs = StepLogs(store.env("logs"), max_bytes_per_step=settings.log_max_bytes_per_step)
        except BaseException:
            ledger.close()
            raise
        try:
            projections = Projections(store, ledger, batch_size=settings.projection_batch_size)
        except BaseException:
            logs.close()
            ledger.close()
            raise
        try:
            signing_key = load_signing_key(signing_key_path(settings))
            for earlier in settings.previous_public_keys:
                PublicKey.from_base64(earlier)  # refused at start, not at the first read
            checkpoints = Checkpoints(checkpoints_env(store))
        except BaseException:
            projections.close()
            logs.close()
            ledger.close()
            raise
        return cls(
            settings=settings,
            store=store,
            ledger=ledger,
            admin_token=read_admin_token(settings),
            logs=logs,
            projections=projections,
            checkpoints=checkpoints,
            signing_key=signing_key,
        )

    @property
    def public_keys(self) -> list[PublicKey]:
        """The keys checkpoints verify with: the signing key's, then earlier ones."""
        assert self.signing_key is not None
        return [self.signing_key.public] + [
            PublicKey.from_base64(text) for text in self.settings.previous_public_keys
        ]

    def start_checkpoint_writer(self) -> None:
        """Runs the checkpoint writer in this process (elected: one per deployment works)."""
        if self.checkpoint_writer is not None or self.projections is None:
            return
        assert self.checkpoints is not None and self.signing_key is not None
        self.checkpoint_writer = checkpoint_writer(
            self.projections, self.checkpoints, self.signing_key, self.settings
        )
        self.checkpoint_writer.start()

    def close(self) -> None:
        if self.checkpoint_writer is not None:
            self.checkpoint_writer.stop()
            self.checkpoint_writer = None
        if self.checkpoints is not None:
            self.checkpoints.close()
        if self.projections is not None:
            self.projections.close()
        self.logs.close()
        self.ledger.close()


def signing_key_path(settings: Settings) -> Path:
    """`TASKTRAIL_SIGNING_KEY`, or `signing-key` in the var directory."""
    return settings.signing_key or settings.var_dir / SIGNING_KEY_FILE


def checkpoint_writer(
    projections: Projections, checkpoints: Checkpoints, key: SigningKey, settings: Settings
) -> CheckpointWriter:
    """The checkpoint writer over one store's chain heads (not started)."""
    return CheckpointWriter(
        checkpoints,
        projections.chain_heads,
        key,
        projections.coordinator(CHECKPOINT_WRITER, listen=False),
        interval=settings.checkpoint_seconds,
    )


@contextmanager
def running_checkpoint_writer(
    projections: Projections, store: StoreConfig, settings: Settings
) -> Iterator[CheckpointWriter]:
    """The checkpoint writer running (elected) while the block runs: `tasktrail worker`."""
    checkpoints = Checkpoints(checkpoints_env(store))
    try:
        writer = checkpoint_writer(
            projections, checkpoints, load_signing_key(signing_key_path(settings)), settings
        )
        writer.start()
        try:
            yield writer
        finally:
            writer.stop()
    finally:
        checkpoints.close()


def checkpoints_env(store: StoreConfig) -> dict[str, str]:
    """The checkpoints' store: a checkpoint a minute per org needs one connection, not ten."""
    env = store.env("checkpoints")
    if store.backend == "postgres":
        env.update({"POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "1"})
    return env
