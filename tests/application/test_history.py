"""Reading the past: versions, moments, replay (with snapshots) and write positions."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import project_aggregate

from domain.application import TaskLedger
from domain.application_errors import TaskNotFoundError
from domain.context import acting_as
from domain.errors import InvalidRequestError
from domain.status import Status
from domain.task import Task
from domain.views import task_view

from .support import (
    ALICE,
    as_executor,
    create_executable,
    create_immediate,
    finish,
    job,
    queued,
    report,
    run_step,
    start,
    stop,
    without_durations,
)


def replayed(ledger: TaskLedger, task_id: UUID, version: int | None = None) -> Task:
    """The task projected from every one of its events, without snapshots or cache."""
    task = project_aggregate(None, ledger.events.get(task_id, lte=version))
    assert isinstance(task, Task)
    return task


def reloaded(ledger: TaskLedger, task_id: UUID) -> Task:
    """The task as the repository loads it from the store (snapshot + events, no cache)."""
    current = ledger.events.get(task_id, desc=True, limit=1)
    task: Any = ledger.repository.get(task_id, version=next(iter(current)).originator_version)
    assert isinstance(task, Task)
    return task


def test_task_is_read_as_of_a_version(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile"), job("test", "unit"))
    report(ledger, task_id, queued())
    report(ledger, task_id, start("build", "compile"))
    report(ledger, task_id, finish("build", "compile"))

    assert ledger.get_task(task_id, version=1)["status"] == "pending"
    at_queue = ledger.get_task(task_id, version=4)
    assert (at_queue["status"], at_queue["version"]) == ("queued", 4)
    assert [j["status"] for j in at_queue["jobs"]] == ["queued", "queued"]
    current = ledger.get_task(task_id)
    assert ledger.get_task(task_id, version=current["version"])["jobs"] == current["jobs"]
    for impossible in (0, -1, current["version"] + 1):
        with pytest.raises(TaskNotFoundError):
            ledger.get_task(task_id, version=impossible)
    with pytest.raises(TaskNotFoundError):
        ledger.get_task(uuid4(), version=1)


def test_task_is_read_as_of_a_moment(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile", "package"))
    report(ledger, task_id, queued())
    report(ledger, task_id, start("build", "compile"))
    report(ledger, task_id, finish("build", "compile"))
    timeline = ledger.timeline(task_id)
    by_version = {e["version"]: e["recorded_at"] for e in timeline}

    # Between the queueing (versions 2-3) and the start (version 4): queued.
    between = by_version[3] + (by_version[4] - by_version[3]) / 2
    then = ledger.get_task(task_id, as_of=between)
    assert (then["status"], then["version"]) == ("queued", 3)
    # Exactly at an event's time: that event counts.
    assert ledger.get_task(task_id, as_of=by_version[4])["version"] >= 4
    # While the first step ran: its duration is measured up to that moment.
    running = by_version[len(timeline)] - timedelta(microseconds=1)
    then = ledger.get_task(task_id, as_of=running)
    assert then["jobs"][0]["steps"][0]["status"] == "in_progress"
    assert then["duration_seconds"] == pytest.approx((running - then["started_at"]).total_seconds())
    # After the last event: the current state.
    latest = ledger.get_task(task_id, as_of=by_version[len(timeline)] + timedelta(days=1))
    assert latest["version"] == len(timeline)
    # Before the task was created it did not exist.
    with pytest.raises(TaskNotFoundError):
        ledger.get_task(task_id, as_of=by_version[1] - timedelta(microseconds=1))
    with pytest.raises(TaskNotFoundError):
        ledger.get_task(uuid4(), as_of=by_version[1])
    # A moment without a time zone is ambiguous.
    with pytest.raises(InvalidRequestError, match="as_of"):
        ledger.get_task(task_id, as_of=by_version[4].replace(tzinfo=None))


def test_reloaded_task_equals_the_task_as_it_was_saved(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep a copy of every task the ledger saves, as it was in memory when saved.
    saved: dict[UUID, Task] = {}
    save = ledger.save

    def keeping_copies(*aggregates: Any, **kwargs: Any) -> Any:
        recordings = save(*aggregates, **kwargs)
        saved.update({a.id: copy.deepcopy(a) for a in aggregates if isinstance(a, Task)})
        return recordings

    monkeypatch.setattr(ledger, "save", keeping_copies)
    task_id = create_executable(
        ledger,
        job("build", "compile", "package"),
        job("deploy", "push", needs=["build"]),
        labels={"app": "shop"},
    )
    views = [ledger.get_task(task_id)]
    report(ledger, task_id, queued())
    report(ledger, task_id, *run_step("build", "compile"))
    views.append(ledger.get_task(task_id))
    report(ledger, task_id, start("build", "package"))
    report(ledger, task_id, finish("build", "package", error={"message": "warned"}))
    ledger.cancel(task_id, "enough")
    rerun_id = ledger.rerun(task_id, author=ALICE).task["id"]
    views.append(ledger.get_task(task_id))

    for task in (task_id, rerun_id):
        assert reloaded(ledger, task) == saved[task]
        assert replayed(ledger, task) == saved[task]
    now = saved[task_id].finished_at
    assert now is not None
    assert task_view(reloaded(ledger, task_id), now) == task_view(saved[task_id], now)
    # Every view read along the way is what that version reads as now.
    for view in views:
        then = ledger.get_task(task_id, version=view["version"])
        assert without_durations(then) == without_durations(view)


def test_reload_from_snapshots_equals_full_replay(ledger: TaskLedger) -> None:
    # Three parallel jobs of 20 steps: well over 120 events.
    steps = [f"s{n:02d}" for n in range(20)]
    task_id = create_executable(ledger, *(job(k, *steps) for k in ("a", "b", "c")))
    report(ledger, task_id, queued())
    for step in steps:
        for key in ("a", "b", "c"):
            report(ledger, task_id, start(key, step))
            report(ledger, task_id, finish(key, step))
    version = ledger.get_task(task_id)["version"]
    assert version > 120
    assert ledger.get_task(task_id)["status"] == "done"

    # Snapshots were taken every 50 versions.
    assert ledger.snapshots is not None
    snapshots = [s.originator_version for s in ledger.snapshots.get(task_id)]
    assert snapshots == list(range(50, version + 1, 50))
    # Loading from the newest snapshot gives the same task as replaying every event,
    # at the current version and at versions just before, at and after a snapshot.
    assert reloaded(ledger, task_id) == replayed(ledger, task_id)
    assert ledger.repository.get(task_id) == replayed(ledger, task_id)
    now = ledger.get_task(task_id)["finished_at"]
    for v in (1, 49, 50, 51, 99, 100, 101, version - 1):
        from_snapshot: Any = ledger.repository.get(task_id, version=v)
        assert from_snapshot == replayed(ledger, task_id, v), v
        assert task_view(from_snapshot, now) == task_view(replayed(ledger, task_id, v), now)
        assert ledger.get_task(task_id, version=v)["version"] == v


def test_every_write_returns_the_position_of_its_last_event(ledger: TaskLedger) -> None:
    positions = []

    def written_at(position: int | None, stream: UUID) -> None:
        # The position is the store's newest: the last event this write stored.
        assert position is not None
        assert position == ledger.recorder.max_notification_id()
        last = ledger.recorder.select_notifications(start=position, limit=1)[0]
        assert last.originator_id == stream
        assert (
            last.originator_version
            == next(iter(ledger.events.get(stream, desc=True, limit=1))).originator_version
        )
        positions.append(position)

    created = create_immediate(ledger)
    written_at(created.position, created.task["id"])
    task_id = create_executable(ledger, job("build", "compile", "package"))
    written_at(ledger.recorder.max_notification_id(), task_id)
    written_at(report(ledger, task_id, queued()).position, task_id)
    written_at(report(ledger, task_id, *run_step("build", "compile")).position, task_id)
    written_at(ledger.cancel(task_id).position, task_id)
    with as_executor():
        written_at(ledger.report(task_id, [stop("build")]).position, task_id)
    rerun = ledger.rerun(task_id, author=ALICE)
    written_at(rerun.position, rerun.task["id"])
    _, _, key_position = ledger.issue_key(org="acme", role="writer", name="ci")
    positions.append(key_position)
    assert key_position == ledger.recorder.max_notification_id()

    assert positions == sorted(set(positions))
    assert positions[0] >= 1


def test_caller_mappings_shaped_like_encoded_objects_survive_the_store(
    ledger: TaskLedger,
) -> None:
    # The store's JSON codec writes objects as {"_type_": ..., "_data_": ...}; a caller's
    # labels, actor or error of that shape must come back as given, not be decoded
    # (into a UUID, or failing on an unknown type and poisoning the stream for good).
    # (An author of that shape is refused by the domain's input rules.)
    labels = {"_type_": "uuid_hex", "_data_": "0" * 32}
    actor = {"_type_": "nope", "_data_": {"id": "x"}}
    error = {"_type_": "tasktrail_step", "_data_": {"key": "x", "name": "x"}}
    steps = [f"s{n:02d}" for n in range(30)]
    with acting_as(actor):
        task_id = ledger.create_task(
            org="acme",
            type="app.deploy",
            title="Deploy",
            kind="executable",
            author=ALICE,
            labels=labels,
            jobs=[job("build", *steps)],
        ).task["id"]
    report(ledger, task_id, start("build", "s00"))
    report(ledger, task_id, finish("build", "s00", Status.DONE_WITH_WARNINGS, error=error))
    for step in steps[1:]:
        report(ledger, task_id, *run_step("build", step))
    assert ledger.snapshots is not None
    assert [s.originator_version for s in ledger.snapshots.get(task_id)] == [50]

    version = ledger.get_task(task_id)["version"]
    for task in (
        replayed(ledger, task_id),  # from the events alone
        ledger.repository.get(task_id, version=version),  # from the snapshot
    ):
        assert task.labels == labels
        assert task.jobs[0].steps[0].error == error
        assert task.jobs[0].error is None
    timeline = ledger.timeline(task_id)
    assert timeline[0]["data"]["labels"] == labels
    assert timeline[0]["actor"] == actor
