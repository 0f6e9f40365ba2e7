"""The deadline index, and the enforcer's one look at it, on every store (a test clock)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from domain.context import SYSTEM_ACTOR
from projections.timeout_enforcer import ENFORCER, TimeoutEnforcer
from tests.projections.conftest import World
from tests.projections.history import RUN_ALL, History, S, create, report, t


def start(world: World, history: History, task_id: UUID) -> None:
    report(world.ledger, history, task_id, [t(S.IN_PROGRESS, "build", "clone")])


def enforcer(world: World) -> TimeoutEnforcer:
    return TimeoutEnforcer(
        world.ledger, world.projections.deadlines, world.projections.coordinator(ENFORCER)
    )


def test_a_started_task_is_due_at_its_start_plus_its_timeout(world: World) -> None:
    history = History()
    task_id = create(world.ledger, history, timeout_seconds=60)
    started_at = world.clock.tick()
    start(world, history, task_id)
    world.sync()
    deadlines = world.projections.deadlines
    assert deadlines.deadline(task_id) == started_at + timedelta(seconds=60)
    assert deadlines.due(started_at + timedelta(seconds=59.999)) == []
    assert deadlines.due(started_at + timedelta(seconds=60)) == [task_id]


def test_due_tasks_come_soonest_deadline_first(world: World) -> None:
    history = History()
    tasks = [create(world.ledger, history, timeout_seconds=s) for s in (300, 100, 200)]
    for task_id in tasks:
        start(world, history, task_id)
    world.sync()
    later = world.clock() + timedelta(hours=1)
    assert world.projections.deadlines.due(later) == [tasks[1], tasks[2], tasks[0]]
    assert world.projections.deadlines.due(later, limit=1) == [tasks[1]]


def test_a_task_that_never_started_or_finished_is_never_due(world: World) -> None:
    history = History()
    pending = create(world.ledger, history, timeout_seconds=1)
    finished = create(world.ledger, history, timeout_seconds=1)
    report(world.ledger, history, finished, RUN_ALL)
    assert world.ledger.get_task(finished)["status"] == "done"
    immediate = create(world.ledger, history, kind="immediate", type="project.member.add")
    world.sync()
    deadlines = world.projections.deadlines
    assert deadlines.due(world.clock() + timedelta(days=30)) == []
    assert deadlines.deadline(pending) is None and deadlines.deadline(finished) is None
    assert deadlines.deadline(immediate) is None


def test_the_enforcer_times_out_a_due_task_once_as_the_system(world: World) -> None:
    history = History()
    task_id = create(world.ledger, history, timeout_seconds=60)
    start(world, history, task_id)
    world.sync()
    enforcing = enforcer(world)
    # Before the deadline: nothing to do.
    assert enforcing.enforce() == 0
    # After it: one timeout, recorded by the service itself.
    world.clock.tick(61)
    assert enforcing.enforce() == 1
    task = world.ledger.get_task(task_id)
    assert task["status"] == "timed_out" and task["failure"]["reason"] == "timeout"
    events = world.ledger.timeline(task_id)
    timed_out = [e for e in events if e["type"] == "TaskTimedOut"]
    assert len(timed_out) == 1 and timed_out[0]["actor"] == SYSTEM_ACTOR
    # The index has not caught up yet: a second look, or a second enforcer, records nothing.
    assert enforcing.enforce() == 0
    assert enforcer(world).enforce() == 0
    world.sync()
    assert world.projections.deadlines.due(world.clock()) == []
    assert [e["type"] for e in world.ledger.timeline(task_id)].count("TaskTimedOut") == 1


def test_a_rebuild_restores_the_same_deadlines(world: World) -> None:
    history = History()
    for seconds in (10, 20, 30):
        start(world, history, create(world.ledger, history, timeout_seconds=seconds))
    report(world.ledger, history, history.tasks[0], RUN_ALL)
    world.sync()
    before = world.projections.deadlines.dump()
    assert len(before["deadlines"]) == 2
    world.projections.rebuild("deadlines")
    assert world.projections.deadlines.dump() == before
