"""Group commit: concurrent commands share a transaction, and each keeps its own outcome.

The ledger's `save` is where one transaction is written; these tests hold the first
write there (a gate), so the commands that arrive meanwhile queue up and are
written together as the next group, deterministically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import OperationalError

from domain.application import ReportItem, TaskLedger, Written
from domain.application_errors import StoreUnavailableError
from domain.context import command_scope
from domain.log_application import StepLogs
from domain.logs import LoggedStep
from projections.stream_positions import stream_positions
from store.config import StoreConfig
from tests.application.support import as_executor, create_executable, job, queued, start


class Gate:
    """Holds the first write in `save` until released; records every write's aggregates."""

    def __init__(self, ledger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.writes: list[list[UUID]] = []
        self.fail_next_group: BaseException | None = None
        self.before_group: Callable[[], None] | None = None
        save = ledger.save
        held = [False]

        def gated_save(*items: Any, **kwargs: Any) -> Any:
            streams = [getattr(i, "originator_id", None) or i.id for i in items if i is not None]
            self.writes.append(list(dict.fromkeys(streams)))
            if not held[0]:
                held[0] = True
                self.entered.set()
                assert self.release.wait(10)
            elif len(items) > 1 and self.before_group is not None:
                before, self.before_group = self.before_group, None
                before()
            if len(items) > 1 and self.fail_next_group is not None:
                error, self.fail_next_group = self.fail_next_group, None
                raise error
            return save(*items, **kwargs)

        monkeypatch.setattr(ledger, "save", gated_save)


@contextmanager
def running(*commands: Callable[[], Any]) -> Iterator[list[Any]]:
    """Runs each command in a thread of its own; yields their outcomes (filled in as they end)."""
    outcomes: list[Any] = [None] * len(commands)

    def run(index: int, command: Callable[[], Any]) -> None:
        try:
            with as_executor():
                outcomes[index] = command()
        except BaseException as error:  # an interrupted leader too
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(commands)]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        for thread in threads:
            thread.join(10)


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def tasks(ledger: TaskLedger, count: int) -> list[UUID]:
    return [create_executable(ledger, job("build", "clone")) for _ in range(count)]


def test_commands_arriving_together_are_one_write_and_each_gets_its_own_answer(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, *others = tasks(ledger, 5)
    gate = Gate(ledger, monkeypatch)

    with running(lambda: ledger.report(first, [queued()])) as leader:
        assert gate.entered.wait(10)
        with running(*[lambda t=t: ledger.report(t, [queued()]) for t in others]) as followers:
            wait_for(lambda: ledger.committer.waiting == len(others))
            time.sleep(0.05)
            # Nothing is answered while the write it waits for is in flight.
            assert followers == [None] * len(others) and leader == [None]
            gate.release.set()

    # The four queued commands: one transaction (in the order they queued up).
    assert len(gate.writes) == 2 and sorted(gate.writes[1]) == sorted(others)
    answers: list[Written] = [*leader, *followers]
    assert [a.task["id"] for a in answers] == [first, *others]
    for answer in answers:
        stored = ledger.get_task(answer.task["id"])
        assert answer.task["status"] == stored["status"] == "queued"
        assert answer.task["version"] == stored["version"]
        assert answer.position == _position_of(ledger, answer.task["id"], stored["version"])
    assert len({a.position for a in answers}) == len(answers)


def test_a_conflicting_member_retries_alone_while_its_neighbours_commit(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, left, contested, right = tasks(ledger, 4)
    save = ledger.save  # another process's write: not through the gate
    gate = Gate(ledger, monkeypatch)

    def another_process_reports() -> None:
        # Between this group's loads and its write, someone else changes `contested`.
        with command_scope():
            other: Any = ledger.repository.get(contested)
            other.report([queued()], ledger.clock())
            save(other)

    gate.before_group = another_process_reports
    with running(lambda: ledger.report(first, [queued()])):
        assert gate.entered.wait(10)
        members = (left, contested, right)
        step = [start("build", "clone")]
        with running(*[lambda t=t: ledger.report(t, step) for t in members]) as answers:
            wait_for(lambda: ledger.committer.waiting == 3)
            gate.release.set()

    assert all(isinstance(a, Written) for a in answers), answers
    assert ledger.conflicts_retried == 1
    # The group failed as a whole, was written member by member, and only the
    # contested command went round again (reloaded, re-applied, saved alone).
    assert sorted(gate.writes[1]) == sorted(members)
    assert sorted(gate.writes[2:5]) == sorted([[left], [contested], [right]])
    assert gate.writes[5:] == [[contested]]
    for task_id in (left, contested, right):
        assert ledger.get_task(task_id)["jobs"][0]["steps"][0]["status"] == "in_progress"
    contested_now = ledger.get_task(contested)
    assert contested_now["queued_at"] is not None  # the other writer's change, kept
    assert answers[1].task["version"] == contested_now["version"]
    assert answers[1].position == _position_of(ledger, contested, contested_now["version"])


def test_a_failed_group_fails_every_caller_and_leaves_nothing_behind(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, *others = tasks(ledger, 4)
    versions = {t: ledger.get_task(t)["version"] for t in others}
    gate = Gate(ledger, monkeypatch)
    gate.fail_next_group = OperationalError("the connection dropped before COMMIT")

    with running(lambda: ledger.report(first, [queued()])):
        assert gate.entered.wait(10)
        with running(*[lambda t=t: ledger.report(t, [queued()]) for t in others]) as outcomes:
            wait_for(lambda: ledger.committer.waiting == len(others))
            gate.release.set()

    # Nothing was stored, so nobody is told it was.
    assert all(isinstance(o, StoreUnavailableError) for o in outcomes), outcomes
    for task_id in others:
        assert ledger.get_task(task_id)["version"] == versions[task_id]
        cached: Any = ledger.repository.cache.get(task_id) if ledger.repository.cache else None
        if cached is not None:
            assert cached.version == versions[task_id] and not cached.pending_events
    # The same commands succeed afterwards, from the stored state, and what the
    # cache keeps is what was stored.
    for task_id in others:
        with as_executor():
            written = ledger.report(task_id, [queued()])
        assert written.task["version"] > versions[task_id]
        cached = ledger.repository.cache.get(task_id) if ledger.repository.cache else None
        if cached is not None:
            assert cached.version == written.task["version"] and not cached.pending_events


def test_an_interrupted_group_write_answers_every_member_and_hands_over(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, *others = tasks(ledger, 3)
    gate = Gate(ledger, monkeypatch)
    gate.fail_next_group = KeyboardInterrupt()

    with running(lambda: ledger.report(first, [queued()])):
        assert gate.entered.wait(10)
        with running(*[lambda t=t: ledger.report(t, [queued()]) for t in others]) as outcomes:
            wait_for(lambda: ledger.committer.waiting == len(others))
            gate.release.set()

    # The member that led gets the interrupt; the other is told nothing was stored.
    assert sorted(type(o).__name__ for o in outcomes) == [
        "KeyboardInterrupt",
        "StoreUnavailableError",
    ]
    assert all(ledger.get_task(t)["status"] != "queued" for t in others)
    # Leadership was handed back: the next writes go through.
    with as_executor():
        assert [ledger.report(t, [queued()]).task["status"] for t in others] == ["queued"] * 2


def test_a_lone_writer_never_waits_for_company(store_url: str) -> None:
    ledger = TaskLedger(StoreConfig.from_url(store_url).env(), group_commit_max_wait_seconds=2.0)
    try:
        task_id = tasks(ledger, 1)[0]
        started = time.monotonic()
        with as_executor():
            ledger.report(task_id, [queued()])
        assert time.monotonic() - started < 1.0
    finally:
        ledger.close()


def test_a_batch_is_one_write(ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = tasks(ledger, 5)
    writes: list[int] = []
    save = ledger.save

    def counting(*items: Any, **kwargs: Any) -> Any:
        writes.append(len(items))
        return save(*items, **kwargs)

    monkeypatch.setattr(ledger, "save", counting)
    with as_executor():
        results = ledger.report_many([ReportItem(t, [queued()]) for t in ids])

    assert writes == [5]
    assert [r.version for r in results if not isinstance(r, Exception)] == [
        ledger.get_task(t)["version"] for t in ids
    ]


def test_concurrent_log_appends_are_one_write_and_each_gets_its_seq(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = StepLogs(StoreConfig.from_url(store_url).env("logs"))
    try:
        first, *others = [
            LoggedStep(UUID(int=n + 1), "build", f"s{n}", "in_progress", True) for n in range(4)
        ]
        gate = Gate(logs, monkeypatch)
        with running(lambda: logs.append(first, "one\n")):
            assert gate.entered.wait(10)
            with running(*[lambda s=s: logs.append(s, "one\n") for s in others]) as answers:
                wait_for(lambda: logs.committer.waiting == len(others))
                gate.release.set()

        assert sorted(gate.writes[1]) == sorted(s.stream_id for s in others)
        assert [a.seq for a in answers] == [1, 1, 1]
        assert len({a.position for a in answers}) == 3
        for step in others:
            assert logs.totals(step.task_id, "build", step.step).chunks == 1
    finally:
        logs.close()


def _position_of(ledger: TaskLedger, task_id: UUID, version: int) -> int | None:
    return stream_positions(ledger.recorder, task_id, after_version=version - 1).get(version)
