"""Hash chains: each task event carries the hash before it and its own, fixed when triggered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any
from uuid import UUID

from eventsourcing.domain import Snapshot

from domain.chain import GENESIS, canonical_json, event_hash, hashed_entry, to_json_value
from domain.task import Task
from domain.views import event_view
from domain.work import Job, Step
from tests.domain.builders import T0, executable, report, run_steps, to

# The recipe pinned: if this hash changes, every stored chain stops verifying.
WORKED_ENTRY = {
    "task_id": "00000000-0000-4000-8000-000000000001",
    "version": 2,
    "type": "TaskQueued",
    "recorded_at": "2025-03-01T12:00:00.250000Z",
    "actor": {"id": "runner-1", "kind": "system", "name": "Wodbot"},
    "data": {"queued_at": "2025-03-01T12:00:00Z"},
    "prev_hash": "ab" * 32,
}
WORKED_JSON = (
    '{"actor":{"id":"runner-1","kind":"system","name":"Wodbot"},'
    '"data":{"queued_at":"2025-03-01T12:00:00Z"},'
    '"prev_hash":"' + "ab" * 32 + '","recorded_at":"2025-03-01T12:00:00.250000Z",'
    '"task_id":"00000000-0000-4000-8000-000000000001","type":"TaskQueued","version":2}'
)
WORKED_HASH = "efbe27a8da312a94fa9b55e812e6e9d85f6f8d9d730d8670aed005b432d11956"


def a_run() -> tuple[Task, list[Any]]:
    task = executable()
    run_steps(task, "build", "clone")
    return task, list(task.collect_events())


def test_each_event_chains_to_the_one_before() -> None:
    task, events = a_run()

    assert events[0].prev_hash == GENESIS
    for before, after in pairwise(events):
        assert after.prev_hash == before.hash
    assert all(e.hash == event_hash(hashed_entry(e)) for e in events)
    assert len({e.hash for e in events}) == len(events)
    assert task.head_hash == events[-1].hash


def test_the_timeline_entry_is_exactly_what_was_hashed() -> None:
    _, events = a_run()

    for event in events:
        entry = event_view(event)
        assert entry["hash"] == event.hash
        assert event_hash({**entry, "task_id": str(entry["task_id"])}) == event.hash
        assert "hash" not in entry["data"] and "prev_hash" not in entry["data"]
    queued = event_view(events[1])
    assert queued["data"] == {"queued_at": to_json_value(events[1].queued_at)}


def test_a_replayed_task_keeps_its_head_and_chains_on() -> None:
    task, events = a_run()

    replayed: Any = None
    for event in events:
        replayed = event.mutate(replayed)
    assert replayed.head_hash == task.head_hash
    report(replayed, to("in_progress", "build", "compile"))
    (next_event,) = replayed.collect_events()[:1]
    assert next_event.prev_hash == events[-1].hash


def test_a_snapshot_carries_the_head_hash() -> None:
    task, events = a_run()
    snapshot = Snapshot.take(task)

    restored: Any = snapshot.mutate(None)
    assert restored.head_hash == events[-1].hash
    report(restored, to("in_progress", "build", "compile"))
    assert restored.collect_events()[0].prev_hash == events[-1].hash


def test_a_changed_event_no_longer_gives_its_hash() -> None:
    _, events = a_run()
    started = next(e for e in events if type(e).__name__ == "StepStarted")

    entry = hashed_entry(started)
    for changed in (
        {"data": {**entry["data"], "step": "compile"}},
        {"version": entry["version"] + 1},
        {"actor": {**entry["actor"], "name": "Mallory"}},
        {"prev_hash": GENESIS},
    ):
        assert event_hash({**entry, **changed}) != started.hash


def test_json_values_are_the_apis() -> None:
    moment = datetime(2025, 3, 1, 13, 0, 0, 500, tzinfo=timezone(timedelta(hours=1)))
    assert to_json_value(moment) == "2025-03-01T12:00:00.000500Z"
    assert to_json_value(T0) == "2025-03-01T12:00:00Z"
    assert to_json_value(UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert to_json_value({"a": ("x", T0.astimezone(UTC))}) == {"a": ["x", "2025-03-01T12:00:00Z"]}
    step = Step(key="s", name="S")
    assert to_json_value(Job(key="j", name="J", needs=[], system=False, steps=[step]))["steps"] == [
        {
            "key": "s",
            "name": "S",
            "system": False,
            "status_value": "pending",
            "started_at": None,
            "finished_at": None,
            "error": None,
            "downgraded": False,
        }
    ]


def test_the_worked_example_of_the_readme() -> None:
    assert canonical_json(WORKED_ENTRY).decode() == WORKED_JSON
    assert canonical_json({"title": "Déployer ✓"}) == '{"title":"Déployer ✓"}'.encode()
    assert event_hash(WORKED_ENTRY) == WORKED_HASH
