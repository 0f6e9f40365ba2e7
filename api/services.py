"""The long-lived objects one service process shares: built once, in the lifespan."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from uuid import UUID

from api.admin_token import read_admin_token
from api.settings import Settings
from domain.application import TaskLedger
from domain.log_application import StepLogs
from projections.runtime import Projections
from store.config import StoreConfig


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
        return cls(
            settings=settings,
            store=store,
            ledger=ledger,
            admin_token=read_admin_token(settings),
            logs=logs,
            projections=projections,
        )

    def close(self) -> None:
        if self.projections is not None:
            self.projections.close()
        self.logs.close()
        self.ledger.close()
