"""A command that loses every race gives up after its bounded attempts, storing nothing.

Another writer changes the task between each attempt's load and its save, so every
save meets the store's optimistic concurrency check for real. The other writer is
driven from the ledger's clock, which the command reads exactly there (to timestamp
the report): an injected dependency, so neither the store nor the ledger is patched.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from domain.application import TaskLedger
from domain.application_errors import ContentionError
from domain.context import acting_as, command_scope
from domain.status import Status
from domain.work import Transition
from store.config import StoreConfig

from .support import EXECUTOR, create_executable, job, queued, report, start, without_durations

MAX_ATTEMPTS = 4
RIVAL = {"id": "key-rival", "name": "Another executor", "kind": "system"}
RIVAL_STEPS = [f"r{n}" for n in range(MAX_ATTEMPTS)]


class RivalOnTheClock:
    """A clock that, while armed, lets another writer change the task each time it is read.

    Each change is one step of the rival's job starting or finishing: always legal,
    always a new version, so the command reading the clock always loses its race.
    """

    def __init__(self) -> None:
        self.ledger: TaskLedger | None = None
        self.task_id: UUID | None = None
        self.changes = iter(
            Transition(status, "rival", step)
            for step in RIVAL_STEPS
            for status in (Status.IN_PROGRESS, Status.DONE)
        )
        self.writes = 0

    def __call__(self) -> datetime:
        now = datetime.now(UTC)
        if self.ledger is not None and self.task_id is not None:
            self._write_first(self.ledger, self.task_id, now)
        return now

    def _write_first(self, ledger: TaskLedger, task_id: UUID, now: datetime) -> None:
        # Another process's command: its own command id and actor, saved straight
        # into the same store, not through this ledger's command path.
        with command_scope(), acting_as(RIVAL):
            other: Any = ledger.repository.get(task_id)
            other.report([next(self.changes)], now)
            ledger.save(other)
        self.writes += 1


@pytest.fixture
def rival() -> RivalOnTheClock:
    return RivalOnTheClock()


@pytest.fixture
def contested_ledger(store_url: str, rival: RivalOnTheClock) -> Iterator[TaskLedger]:
    app = TaskLedger(StoreConfig.from_url(store_url).env(), clock=rival)
    app.max_attempts = MAX_ATTEMPTS
    app.backoff_base = app.backoff_cap = 0.001  # the back-off is not what is tested here
    try:
        yield app
    finally:
        app.close()


def test_command_that_always_loses_the_race_gives_up_and_stores_nothing(
    contested_ledger: TaskLedger, rival: RivalOnTheClock
) -> None:
    ledger = contested_ledger
    task_id = create_executable(ledger, job("ours", "s0"), job("rival", *RIVAL_STEPS))
    report(ledger, task_id, queued())
    before = ledger.get_task(task_id)["version"]

    # Every attempt of our report is overtaken by the rival between load and save.
    rival.ledger, rival.task_id = ledger, task_id
    with pytest.raises(ContentionError, match=f"{MAX_ATTEMPTS} attempts"):
        report(ledger, task_id, start("ours", "s0"))
    rival.ledger = None

    assert rival.writes == MAX_ATTEMPTS  # one attempt per lost race, and no more
    assert ledger.conflicts_retried == MAX_ATTEMPTS
    # The stream holds the rival's changes only: nothing of the refused command.
    stored: list[Any] = list(ledger.events.get(task_id, gt=before))
    assert stored and all(e.actor == RIVAL for e in stored)
    assert not any(getattr(e, "job", None) == "ours" for e in stored)
    task = ledger.get_task(task_id)
    assert task["version"] == before + len(stored)
    ours = next(j for j in task["jobs"] if j["key"] == "ours")
    assert ours["status"] == "queued" and ours["steps"][0]["status"] == "pending"


def test_command_succeeds_once_the_contention_is_over(
    contested_ledger: TaskLedger, rival: RivalOnTheClock
) -> None:
    ledger = contested_ledger
    task_id = create_executable(ledger, job("ours", "s0"), job("rival", *RIVAL_STEPS))
    report(ledger, task_id, queued())
    rival.ledger, rival.task_id = ledger, task_id
    with pytest.raises(ContentionError):
        report(ledger, task_id, start("ours", "s0"))
    rival.ledger = None
    after_contention = ledger.get_task(task_id)["version"]

    # The failed command left nothing half-done behind (in the cache or the store):
    # the same report, retried by the caller, is stored once, on top of the rival's.
    written = report(ledger, task_id, start("ours", "s0"))

    assert without_durations(written.task) == without_durations(ledger.get_task(task_id))
    stored: list[Any] = list(ledger.events.get(task_id, gt=after_contention))
    assert [(type(e).__name__, e.job) for e in stored] == [
        ("JobStarted", "ours"),
        ("StepStarted", "ours"),
    ]
    assert all(e.actor == EXECUTOR for e in stored)
