"""The long-lived objects one service process shares: built once, in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from api.settings import Settings
from domain.application import TaskLedger
from domain.storage import StoreConfig


@dataclass
class Services:
    settings: Settings
    store: StoreConfig
    ledger: TaskLedger

    @classmethod
    def start(cls, settings: Settings) -> Services:
        store = StoreConfig.from_url(settings.database_url)
        return cls(settings=settings, store=store, ledger=TaskLedger(store.env("tasks")))

    def close(self) -> None:
        self.ledger.close()
