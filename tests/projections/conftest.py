"""A ledger and its read models over each store; projections are caught up explicitly.

Most projection tests apply events with `World.sync()` (the runner's own batch
function, in the test's thread), so they wait for nothing; the runner tests start
real runner threads and wait for positions, never with sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from domain.application import TaskLedger
from projections.runner import catch_up
from projections.runtime import Projections
from store.config import StoreConfig
from tests.projections.history import Clock


@dataclass
class World:
    store: StoreConfig
    ledger: TaskLedger
    projections: Projections
    clock: Clock

    def sync(self, batch_size: int = 500) -> int:
        """Applies every stored event to every projection; the store's head."""
        head = self.ledger.recorder.max_notification_id() or 0
        for projection in self.projections.projections.values():
            assert catch_up(self.ledger, projection, until=head, batch_size=batch_size) == head
        return head


@contextmanager
def open_world(url: str) -> Iterator[World]:
    store = StoreConfig.from_url(url)
    clock = Clock()
    ledger = TaskLedger(store.env("tasks"), clock=clock)
    projections = Projections(store, ledger)
    try:
        yield World(store, ledger, projections, clock)
    finally:
        projections.close()
        ledger.close()


@pytest.fixture
def world(store_url: str) -> Iterator[World]:
    """A fresh ledger with its read models, on each store in turn."""
    with open_world(store_url) as opened:
        yield opened
