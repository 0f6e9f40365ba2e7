"""Runners: writes show up within moments, one runner per projection, no stalls."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from eventsourcing.persistence import Tracking
from eventsourcing.projection import ProjectionRunner

from domain.application import TaskLedger
from projections.coordination import PostgresCoordinator, advisory_key
from projections.runner import BatchRunner
from projections.runtime import Projections, RunnerActiveError
from projections.task_list import TaskListProjection, TaskQuery
from projections.task_list_sql import PostgresTaskList
from projections.tracked_view import PositionConflict
from tests.projections.conftest import World, open_world
from tests.projections.history import History, create

WARM_UP_WRITES = 3
LATENCY_SAMPLES = 25


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Polls a condition that has no position to wait for (who leads, say)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def write_and_wait(world: World, history: History) -> float:
    """Seconds from the start of a write until every read model shows it."""
    started = time.perf_counter()
    task_id = create(world.ledger, history)
    for projection in world.projections.projections.values():
        assert projection.view.progress.wait_for(history.last_position, timeout=5)
    seen = time.perf_counter() - started
    assert world.projections.task_list.get(task_id, "acme") is not None
    return seen


def test_a_write_is_in_the_lists_within_tens_of_milliseconds(world: World) -> None:
    world.projections.start()
    history = History()
    # The first writes elect the runners and open their connections: not what is measured.
    for _ in range(WARM_UP_WRITES):
        write_and_wait(world, history)
    # Each write comes just after the one before was seen: a runner that polls every
    # 100 ms (the library's default) would have just gone to sleep for all of it.
    latencies = [write_and_wait(world, history) for _ in range(LATENCY_SAMPLES)]
    # The median is tens of milliseconds (a wake-up by NOTIFY, or a 20 ms poll); a
    # loaded machine's outliers move the median little.
    assert statistics.median(latencies) < 0.06, sorted(latencies)


def test_a_batch_that_starts_from_a_stale_position_writes_nothing(world: World) -> None:
    history = History()
    create(world.ledger, history)
    world.sync()
    projection = world.projections.projections["task_list"]
    before = projection.view.dump()
    with pytest.raises(PositionConflict):
        projection.process_batch([], tracking=Tracking(world.ledger.name, 99), expected=0)
    assert projection.view.dump() == before
    assert projection.view.max_tracking_id(world.ledger.name) == history.last_position


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    url = (
        f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_world(url) as world:
        yield world


def test_one_runner_per_projection_works_and_a_standby_takes_over(shared_store: World) -> None:
    world = shared_store
    other = Projections(world.store, world.ledger)
    try:
        # Two processes' worth of runners: one leads each projection, the other stands by.
        world.projections.start()
        other.start()
        for name in world.projections.projections:
            runners = [world.projections.runners[name], other.runners[name]]
            assert eventually(lambda rs=runners: sum(r.is_leader for r in rs) == 1)  # type: ignore[misc]
            assert sum(r.is_leader for r in runners) == 1
        history = History()
        create(world.ledger, history)
        assert other.task_list.progress.wait_for(history.last_position, timeout=5)
        # The leaders stop (their process dies): the standbys take over.
        leaders = [
            p for p in (world.projections, other)
            if any(r.is_leader for r in p.runners.values())
        ]  # fmt: skip
        survivor = other if world.projections in leaders else world.projections
        for projections in leaders:
            if projections is not survivor:
                projections.stop()
        for runner in survivor.runners.values():
            assert eventually(lambda r=runner: r.is_leader)  # type: ignore[misc]
        create(world.ledger, history)
        for projection in survivor.projections.values():
            assert projection.view.progress.wait_for(history.last_position, timeout=5)
        rows = survivor.task_list.list_tasks(TaskQuery(org="acme")).rows
        assert len(rows) == 2 and all(r["events_applied"] == r["version"] for r in rows)
    finally:
        other.close()


@pytest.fixture
def pg_world(pg_url: str) -> Iterator[World]:
    with open_world(pg_url) as world:
        yield world


def test_a_lost_notify_does_not_stall_the_runner(pg_world: World) -> None:
    world = pg_world
    # A runner that never hears a NOTIFY (it listens on a channel nobody uses)...
    deaf = PostgresCoordinator(
        world.store.conninfo(),
        advisory_key(world.store.pg_dbname, world.store.pg_schema, "task_list"),
        channel="tasktrail_nobody_notifies_here",
    )
    runner = BatchRunner(world.ledger, world.projections.projections["task_list"], deaf)
    runner.start()
    try:
        # ...still applies each write, by polling every 100 ms. Each write comes just after
        # the one before was applied, when the runner has just begun a polling interval.
        history, latencies = History(), []
        for _ in range(7):
            started = time.perf_counter()
            create(world.ledger, history)
            assert world.projections.task_list.progress.wait_for(history.last_position, 5)
            latencies.append(time.perf_counter() - started)
        # No stall: a runner that polled every second would wait about a second each time.
        assert statistics.median(latencies) < 0.4, sorted(latencies)
    finally:
        runner.stop()


def test_a_stopped_runner_lets_go_of_its_election(shared_store: World) -> None:
    world = shared_store
    world.projections.start()
    runner = world.projections.runners["event_feed"]
    assert eventually(lambda: runner.is_leader)
    world.projections.stop()
    coordinator = world.projections.coordinator("event_feed")
    try:
        assert coordinator.acquire(threading.Event(), wait=False)
    finally:
        coordinator.close()


def test_the_librarys_own_runner_can_drive_a_projection_one_event_at_a_time(
    pg_world: World,
) -> None:
    world = pg_world
    env = world.store.env("tasks")
    history = History()
    create(world.ledger, history)
    with ProjectionRunner(  # type: ignore[type-var]
        application_class=TaskLedger,
        projection_class=TaskListProjection,
        view_class=PostgresTaskList,
        env=env,
    ) as runner:
        runner.wait(history.last_position, timeout=5)
        create(world.ledger, history)
        started = time.perf_counter()
        runner.wait(history.last_position, timeout=5)
        assert time.perf_counter() - started < 0.09  # the library's own wait polls from 100 ms
    rows = world.projections.task_list.list_tasks(TaskQuery(org="acme")).rows
    assert len(rows) == 2 and all(r["events_applied"] == r["version"] == 1 for r in rows)


def test_a_rebuild_refuses_to_run_beside_a_working_runner(shared_store: World) -> None:
    world = shared_store
    other = Projections(world.store, world.ledger)
    try:
        other.start()
        assert eventually(lambda: other.runners["task_list"].is_leader)
        with pytest.raises(RunnerActiveError, match="stop it before rebuilding"):
            world.projections.rebuild("task_list")
    finally:
        other.close()
