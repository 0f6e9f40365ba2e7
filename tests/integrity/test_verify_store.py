"""`verify_store` on every backend: chains stay whole across snapshots, scopes, progress."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from domain.application import TaskLedger
from integrity.problems import Problem
from integrity.verify import verify_store
from store.config import StoreConfig
from tests.application.support import create_executable, create_immediate, job, report, run_step


@pytest.fixture
def ledger(store_url: str) -> Iterator[TaskLedger]:
    opened = TaskLedger(StoreConfig.from_url(store_url).env("tasks"))
    try:
        yield opened
    finally:
        opened.close()


def test_a_chain_past_its_snapshots_verifies_and_chains_on(ledger: TaskLedger) -> None:
    # 3 jobs of 10 steps, each started and finished: well past the snapshot interval (50).
    jobs = [job(f"j{j}", *(f"s{s}" for s in range(10))) for j in range(3)]
    task_id = create_executable(ledger, *jobs)
    steps = [(f"j{j}", f"s{s}") for j in range(3) for s in range(10)]
    for key, step in steps[:-1]:
        report(ledger, task_id, *run_step(key, step))
    assert ledger.snapshots is not None
    assert list(ledger.snapshots.get(task_id)), "a snapshot was taken"

    # The task loaded from its snapshot chains its next event to the stored head.
    stored: list[Any] = list(ledger.events.get(task_id))
    assert ledger.repository.get(task_id).head_hash == stored[-1].hash
    report(ledger, task_id, *run_step(*steps[-1]))
    after: Any = list(ledger.events.get(task_id))[len(stored)]
    assert after.prev_hash == stored[-1].hash
    verified = verify_store(ledger)
    assert verified.ok, verified.problems
    assert verified.events_checked == ledger.get_task(task_id)["version"] > 60


def test_scopes_and_progress(ledger: TaskLedger) -> None:
    ours = create_executable(ledger, job("build", "compile"))
    create_immediate(ledger)
    theirs = create_executable(ledger, job("build", "compile"), org="globex")
    seen: list[tuple[int, int]] = []

    everything = verify_store(ledger, progress=lambda done, total: seen.append((done, total)))
    assert (everything.ok, everything.tasks_checked) == (True, 3)
    assert seen and seen[-1][0] == seen[-1][1]
    assert verify_store(ledger, org="acme").tasks_checked == 2
    assert verify_store(ledger, org="acme", task_id=ours).tasks_checked == 1
    assert verify_store(ledger, org="acme", task_id=theirs).tasks_checked == 0
    assert verify_store(ledger, task_id=theirs).tasks_checked == 1


def test_extra_checks_get_the_stored_hashes_in_scope(ledger: TaskLedger) -> None:
    ours = create_executable(ledger, job("build", "compile"))
    create_executable(ledger, job("build", "compile"), org="globex")
    given: list[Mapping[tuple[str, int], str]] = []

    def check(stored: Mapping[tuple[str, int], str]) -> list[Problem]:
        given.append(stored)
        return []

    verify_store(ledger, org="acme", extra_checks=[check])

    (stored,) = given
    events: list[Any] = list(ledger.events.get(ours))
    assert stored == {(str(ours), e.originator_version): e.hash for e in events}
