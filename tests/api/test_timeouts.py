"""Hard timeouts fire in the background, with no request arriving, exactly once.

These tests run the projection runners and the timeout enforcer (as `serve` and
`worker` do) and wait by polling the ledger, never with a fixed sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from domain.application import TaskLedger
from projections.coordination import Coordinator
from projections.runtime import Projections
from projections.timeout_enforcer import TimeoutEnforcer
from store.config import StoreConfig
from tests.api.conftest import Api, assert_problem, step
from tests.projections.history import History, S, create, report, t


def wait_for_status(
    ledger: TaskLedger, task_id: str, status: str, timeout: float = 5.0
) -> dict[str, Any]:
    """Polls the ledger until the task has `status` (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        task = ledger.get_task(UUID(task_id))
        if task["status"] == status or time.monotonic() > deadline:
            assert task["status"] == status, task["status"]
            return task
        time.sleep(0.02)


def timeouts_recorded(ledger: TaskLedger, task_id: str) -> int:
    return [e["type"] for e in ledger.timeline(UUID(task_id))].count("TaskTimedOut")


# How late after its deadline a timeout may be recorded. The enforcer looks every
# 0.2 s and the deadline index lags by milliseconds, so it fires within ~0.2 s; the
# rest is room for a loaded CI machine (two xdist workers on two cores) to schedule
# its thread late. It still fails an enforcer that only fires on a later request or
# on a multi-second tick.
TIMEOUT_LATENESS = timedelta(seconds=1.5)


def test_a_started_task_times_out_with_no_request_arriving(make_api: Callable[..., Api]) -> None:
    api = make_api(run_projections=True)
    task_id = api.create_task(timeout_seconds=1)["id"]
    api.reported(task_id, step("build", "clone", "in_progress"))
    # Nobody calls: the enforcer fires about a second after the start.
    task = wait_for_status(api.ledger, task_id, "timed_out")
    assert task["failure"]["reason"] == "timeout"
    assert timeouts_recorded(api.ledger, task_id) == 1
    timed_out = next(e for e in api.timeline(task_id) if e["type"] == "TaskTimedOut")
    assert timed_out["actor"]["kind"] == "system"
    # Recorded at the deadline (started_at + timeout_seconds, as GET shows them), never
    # before it, and within about a second after it.
    shown = api.get_task(task_id)
    deadline = moment(shown["started_at"]) + timedelta(seconds=shown["timeout_seconds"])
    recorded_at = moment(timed_out["recorded_at"])
    assert deadline <= recorded_at <= deadline + TIMEOUT_LATENESS, (deadline, recorded_at)
    # The job's late report is refused, and says why.
    body = assert_problem(api.report(task_id, step("build", "clone", "done")), 409)
    assert "timed out" in body["detail"], body
    assert timeouts_recorded(api.ledger, task_id) == 1


def moment(text: str) -> datetime:
    """A timestamp as the API writes it (ISO 8601, with its offset)."""
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, text
    return parsed


def test_a_task_that_never_started_or_finished_never_times_out(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(run_projections=True)
    pending = api.create_task(timeout_seconds=1)["id"]
    finished = api.create_task(timeout_seconds=1)["id"]
    api.finish(finished)
    # A started one is the control: once it timed out, the enforcer has been looking.
    started = api.create_task(timeout_seconds=1)["id"]
    api.reported(started, step("build", "clone", "in_progress"))
    created = time.monotonic()
    wait_for_status(api.ledger, started, "timed_out")
    time.sleep(max(0.0, 2.0 - (time.monotonic() - created)))  # two seconds past the timeouts
    assert api.get_task(pending)["status"] == "pending"
    assert api.get_task(finished)["status"] == "done"
    assert timeouts_recorded(api.ledger, pending) == timeouts_recorded(api.ledger, finished) == 0


@pytest.fixture
def pg_deployments(pg_url: str) -> Iterator[Callable[..., list[tuple[TaskLedger, Projections]]]]:
    """Opens n ledgers with their read models on one PostgreSQL store (n processes' worth)."""
    opened: list[tuple[TaskLedger, Projections]] = []

    def open_n(n: int, **options: Any) -> list[tuple[TaskLedger, Projections]]:
        store = StoreConfig.from_url(pg_url)
        for _ in range(n):
            ledger = TaskLedger(store.env("tasks"))
            opened.append((ledger, Projections(store, ledger, **options)))
        return opened[-n:]

    yield open_n
    for ledger, projections in opened:
        projections.close()
        ledger.close()


def started_tasks(ledger: TaskLedger, n: int) -> list[str]:
    """n tasks with a one-second timeout, each with a step in progress."""
    history = History()
    tasks = [create(ledger, history, timeout_seconds=1) for _ in range(n)]
    for task_id in tasks:
        report(ledger, history, task_id, [t(S.IN_PROGRESS, "build", "clone")])
    return [str(task_id) for task_id in tasks]


def test_two_deployments_on_one_store_record_each_timeout_once(
    pg_deployments: Callable[..., list[tuple[TaskLedger, Projections]]],
) -> None:
    # Two processes' worth of runners and enforcers on one PostgreSQL database.
    (first, first_projections), (second, second_projections) = pg_deployments(2)
    first_projections.start()
    second_projections.start()
    tasks = started_tasks(first, 4)
    for task_id in tasks:
        wait_for_status(second, task_id, "timed_out")
    assert all(timeouts_recorded(first, task_id) == 1 for task_id in tasks)
    # One enforcer was elected; the other stands by.
    enforcers = [first_projections.enforcer, second_projections.enforcer]
    assert sum(1 for e in enforcers if e is not None and e.is_leader) == 1


def test_two_enforcers_racing_record_each_timeout_once(
    pg_deployments: Callable[..., list[tuple[TaskLedger, Projections]]],
) -> None:
    # The index's runners run; the enforcers are driven by hand, with no election.
    (ledger, projections), (other, _) = pg_deployments(2, enforce_timeouts=False)
    projections.start()
    tasks = started_tasks(ledger, 6)
    deadline = time.monotonic() + 5
    while len(projections.deadlines.due(ledger.clock())) < len(tasks):
        assert time.monotonic() < deadline, "the deadlines never came due"
        time.sleep(0.02)
    # Both enforcers look at the same moment and see the same due tasks.
    racers = [TimeoutEnforcer(app, projections.deadlines, Coordinator()) for app in (ledger, other)]
    barrier = threading.Barrier(len(racers))
    fired: list[int] = []

    def race(enforcer: TimeoutEnforcer) -> None:
        barrier.wait()
        fired.append(enforcer.enforce())

    threads = [threading.Thread(target=race, args=(r,)) for r in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sum(fired) == len(tasks) and all(r.errors == 0 for r in racers)
    for task_id in tasks:
        assert ledger.get_task(UUID(task_id))["status"] == "timed_out"
        assert timeouts_recorded(ledger, task_id) == 1
