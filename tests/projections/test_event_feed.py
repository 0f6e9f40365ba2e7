"""The org event index: every event of an org once, in order, flagged and filterable."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from domain.api_key import ApiKey
from domain.idempotency import IdempotentAnswer
from domain.task import Task
from projections.batched import _event_class
from tests.projections.conftest import World
from tests.projections.history import FAIL_SYSTEM, History, create, report, scripted_history


def entries(world: World, org: str, **filters: Any) -> list[dict[str, Any]]:
    return [json.loads(r.entry) for r in world.projections.event_feed.events(org, **filters)]


def test_each_org_feed_holds_its_events_once_in_global_order(world: World) -> None:
    scripted_history(world.ledger, tasks=60, seed=5, clock=world.clock)
    world.sync()
    notifications = world.ledger.recorder.select_notifications(start=0, limit=100_000)
    classes = {n.id: _event_class(n.topic) for n in notifications}
    org_events = {i for i, cls in classes.items() if issubclass(cls, Task.Event | ApiKey.Event)}
    assert any(issubclass(cls, IdempotentAnswer.Event) for cls in classes.values())
    acme = entries(world, "acme", limit=100_000, include_system=True)
    evil = entries(world, "evil", limit=100_000, include_system=True)
    positions = [e["position"] for e in acme]
    assert positions == sorted(positions)
    # Every task and key event is in exactly one org's feed; idempotency records in none.
    assert sorted(positions + [e["position"] for e in evil]) == sorted(org_events)
    assert evil and all(world.ledger.get_task(UUID(e["task_id"]))["org"] == "evil" for e in evil)


def test_entries_are_timeline_entries_with_task_and_position(world: World) -> None:
    history = History()
    task_id = create(world.ledger, history)
    world.sync()
    [entry] = entries(world, "acme")
    timeline = world.ledger.timeline(task_id)[0]
    assert entry["position"] == 1
    assert entry["task_id"] == entry["stream_id"] == str(task_id)
    assert entry["type"] == "TaskCreated" == timeline["type"]
    assert entry["version"] == 1
    assert entry["actor"] == timeline["actor"]
    assert entry["recorded_at"].endswith("Z") and entry["occurred_at"].endswith("Z")
    assert entry["data"]["title"] == "Deploy shop"
    assert [j["key"] for j in entry["data"]["jobs"]] == ["build", "deploy", "sync"]


def test_events_about_system_work_are_flagged(world: World) -> None:
    history = History()
    task_id = create(world.ledger, history)
    report(world.ledger, history, task_id, FAIL_SYSTEM)
    world.sync()
    everything = entries(world, "acme", include_system=True)
    regular = entries(world, "acme")
    hidden = [e for e in everything if e not in regular]
    assert hidden and all(e["data"].get("job") == "sync" for e in hidden)
    assert all(e["data"].get("job") != "sync" for e in regular)
    # The task's failure is still in the regular feed (its redaction is the API's job).
    assert regular[-1]["type"] == "TaskFinished" and regular[-1]["data"]["status"] == "failed"
    # Regular pages come with the shape the API redacts with.
    rows = world.projections.event_feed.events("acme")
    sync = next(j for j in rows[0].shape["jobs"] if j["key"] == "sync")  # type: ignore[index]
    assert sync == {"key": "sync", "system": True, "steps": [{"key": "push", "system": True}]}


def test_api_key_events_belong_to_the_keys_org_without_task_or_token_hash(world: World) -> None:
    view, _token, _position = world.ledger.issue_key(org="acme", role="reader", name="ci")
    world.ledger.revoke_key(view["id"])
    world.ledger.issue_key(org="*", role="admin", name="platform")
    world.sync()
    issued, revoked = entries(world, "acme")
    assert (issued["type"], revoked["type"]) == ("ApiKeyIssued", "ApiKeyRevoked")
    assert issued["task_id"] is None and issued["stream_id"] == str(view["id"])
    assert issued["data"] == {"org": "acme", "role": "reader", "name": "ci"}
    assert [e["type"] for e in entries(world, "*")] == ["ApiKeyIssued"]


def test_feed_filters_and_bounds(world: World) -> None:
    history = History()
    first = create(world.ledger, history)
    second = create(world.ledger, history, kind="immediate", type="project.member.add")
    history.note(world.ledger.cancel(first).position)
    world.sync()
    all_ = entries(world, "acme", include_system=True)
    assert [e["type"] for e in entries(world, "acme", type="TaskCreated")] == ["TaskCreated"] * 2
    assert {e["task_id"] for e in entries(world, "acme", task_id=second)} == {str(second)}
    middle = all_[1]["position"]
    assert entries(world, "acme", after=middle, include_system=True) == all_[2:]
    assert entries(world, "acme", until=middle, include_system=True) == all_[:2]
    assert entries(world, "acme", limit=1, include_system=True) == all_[:1]
