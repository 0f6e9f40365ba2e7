"""Rebuilds: projections read each event as the library decodes it, feed entries are
timeline entries, and a rebuilt view gets all of its indexes back."""

from __future__ import annotations

import json
from typing import Any

from projections.batched import EventRecord
from projections.decoding import StateDecoder, event_class
from projections.sql import dumps
from projections.tracked_view import TrackedView
from tests.projections.conftest import World
from tests.projections.history import History, create, scripted_history

# A caller's mapping that looks like one the library encoded (it is escaped when stored).
LOOKALIKE_LABELS = {"_type_": "datetime_iso", "_data_": "not a time"}


def index_names(view: TrackedView) -> set[str]:
    with view._reading() as cursor:
        if view.dialect.name == "postgres":
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s",
                (view.datastore.schema,),  # type: ignore[attr-defined]
            )
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        return {next(iter(dict(row).values())) for row in cursor.fetchall()}


def test_projections_read_every_field_as_the_library_decodes_it(world: World) -> None:
    scripted_history(world.ledger, tasks=40, seed=3, clock=world.clock)
    task_id = create(world.ledger, History(), labels=LOOKALIKE_LABELS)
    decoder = StateDecoder(world.ledger.mapper)
    notifications = world.ledger.recorder.select_notifications(start=0, limit=100_000)
    for notification in notifications:
        record = EventRecord(
            notification.originator_id,  # type: ignore[arg-type]
            notification.originator_version,
            event_class(notification.topic),
            decoder.state(notification),
            decoder,
        )
        event = world.ledger.mapper.to_domain_event(notification)
        expected = dict(vars(event))
        del expected["originator_id"], expected["originator_version"]
        assert {name: record.value(name) for name in record.state} == expected
    world.sync()
    row = world.projections.task_list.get(task_id, "acme")
    assert row is not None and row["labels"] == LOOKALIKE_LABELS


def test_every_feed_entry_is_its_events_timeline_entry(world: World) -> None:
    history = scripted_history(world.ledger, tasks=40, seed=3, clock=world.clock)
    task_id = create(world.ledger, history, labels=LOOKALIKE_LABELS)
    history.tasks.append(task_id)
    world.sync()
    feed: dict[tuple[str, int], dict[str, Any]] = {}
    for org in ("acme", "evil"):
        for row in world.projections.event_feed.events(org, limit=100_000, include_system=True):
            entry = json.loads(row.entry)
            feed[entry["stream_id"], entry["version"]] = entry
    for task_id in history.tasks:
        for timeline_entry in world.ledger.timeline(task_id):
            entry = feed[str(task_id), timeline_entry["version"]]
            expected = {"position": entry["position"], **timeline_entry, "stream_id": task_id}
            assert entry == json.loads(dumps(expected))


def test_a_rebuilt_view_has_all_of_its_indexes(world: World) -> None:
    scripted_history(world.ledger, tasks=10, clock=world.clock)
    for name, projection in world.projections.projections.items():
        world.projections.rebuild(name)
        assert set(projection.view.indexes.values()) <= index_names(projection.view), name


def test_a_runner_taking_over_a_half_rebuilt_view_restores_its_indexes(world: World) -> None:
    history = History()
    create(world.ledger, history)
    view = world.projections.task_list
    # A rebuild that stopped right after emptying the view: no indexes yet.
    view.reset()
    assert not set(view.indexes.values()) & index_names(view)
    world.projections.start()
    assert view.progress.wait_for(history.last_position, timeout=10)
    assert set(view.indexes.values()) <= index_names(view)
