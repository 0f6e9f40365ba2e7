"""Exactly-once across crashes, and rebuilds that reproduce the live tables exactly.

`tasktrail worker` (the production entry point, in a process of its own: see
`crash_child.py`) is SIGKILLed at random moments while the test keeps writing
thousands of events, and restarted each time. Afterwards every projection has
applied exactly the events stored, no more, no fewer (compared with the events
themselves, never with position contiguity: positions have gaps by design), and
the read models equal a fresh rebuild, row by row. The worker marks each batch
it starts and commits, which shows that kills landed inside batches. A
deliberately broken worker (task-list rows and position committed separately) is
the control: the same check must catch it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.utils import resolve_topic

from domain.api_key import ApiKey
from domain.task import Task
from projections.runtime import CATALOGUE
from tests.projections.conftest import World, open_world
from tests.projections.history import scripted_history

ROOT = Path(__file__).resolve().parents[2]
KILLS = 5
BACKLOG = 1000  # events stored before the first worker starts
PACE = 300  # events a second written while the workers are killed and restarted
SPLIT_COMMIT_PAUSE = 0.3  # seconds the control leaves between its two commits
# The control's batches are small, so its kills land mostly between its two commits.
CONTROL_BATCH_SIZE = 50
PRODUCTION_BATCH_SIZE = 500  # the worker's default
# Projection name of each view class (what the worker's batch markers name).
VIEW_NAMES = {cls.__name__: name for name, (_, *views) in CATALOGUE.items() for cls in views}


@pytest.fixture(params=["sqlite", "postgres"])
def durable_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The stores a second process can share: SQLite and PostgreSQL (not memory)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def durable_world(durable_store_url: str) -> Iterator[World]:
    with open_world(durable_store_url) as world:
        # The worker's timeout enforcer reads the real clock: deadlines far in the
        # future keep it from timing out the tasks the test is still writing to.
        world.clock.now = datetime(2100, 1, 1, tzinfo=UTC)
        yield world


# ---------------------------------------------------------------- the writes


class Writer(threading.Thread):
    """Keeps writing scripted histories (every kind of event) until stopped; once
    `pace` is set, at most `pace` events a second (the test's runtime stays modest)."""

    def __init__(self, world: World):
        super().__init__(name="writer", daemon=True)
        self.world = world
        self.pace: float | None = None
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        seed = 1
        try:
            while not self._halt.is_set():
                started, before = time.monotonic(), head(self.world)
                scripted_history(self.world.ledger, tasks=12, seed=seed, clock=self.world.clock)
                seed += 1
                if self.pace is not None:
                    due = (head(self.world) - before) / self.pace
                    self._halt.wait(max(0.0, due - (time.monotonic() - started)))
        except BaseException as error:
            self.error = error

    def halt(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=30)

    def stop(self) -> None:
        self.halt()
        assert self.error is None, f"the writer failed: {self.error!r}"


def head(world: World) -> int:
    return world.ledger.recorder.max_notification_id() or 0


def wait_for_head(world: World, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while head(world) < at_least:
        assert time.monotonic() < deadline, f"the writer stopped at {head(world)} events"
        time.sleep(0.05)


# ---------------------------------------------------------------- the worker


@dataclass
class Worker:
    """One `tasktrail worker` process and the file its batch markers go to."""

    process: subprocess.Popen[str]
    markers: Path


def start_worker(url: str, mode: str, batch_size: int, workdir: Path, life: int) -> Worker:
    markers = workdir / f"markers-{life}.txt"
    env = {
        **os.environ,
        "TASKTRAIL_DATABASE_URL": url,
        "TASKTRAIL_PROJECTION_BATCH_SIZE": str(batch_size),
        "TASKTRAIL_VAR_DIR": str(workdir / "var"),
        "TASKTRAIL_LOG_LEVEL": "warning",
    }
    log_path = workdir / f"worker-{life}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.projections.crash_child",
                mode,
                str(markers),
                str(SPLIT_COMMIT_PAUSE),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("tasktrail worker: running"), log_path.read_text()[-2000:]
    return Worker(process, markers)


def kill(worker: Worker) -> None:
    worker.process.kill()  # SIGKILL: no cleanup, no rollback but the database's own
    assert worker.process.wait() == -signal.SIGKILL, "the worker had died before the kill"
    assert worker.process.stdout is not None
    worker.process.stdout.close()


def stop(worker: Worker) -> int:
    worker.process.terminate()  # SIGTERM: how an operator stops `tasktrail worker`
    worker.process.communicate(timeout=30)
    return worker.process.returncode


def wait_until_elections_are_free(world: World, timeout: float = 15) -> None:
    """Returns once the dead worker's locks are gone.

    On PostgreSQL that means its sessions ended, so any COMMIT it had already sent
    has been processed: what the views hold now is final.
    """
    deadline = time.monotonic() + timeout
    for name in world.projections.projections:
        coordinator = world.projections.coordinator(name, listen=False)
        try:
            while not coordinator.acquire(threading.Event(), wait=False):
                assert time.monotonic() < deadline, f"the dead worker still holds {name}"
                time.sleep(0.02)
        finally:
            coordinator.close()


def unfinished_batches(worker: Worker) -> dict[str, tuple[int, int]]:
    """Each projection's batch marked `start` but not `end`: (from, to] positions."""
    begun: dict[str, tuple[int, int]] = {}
    text = worker.markers.read_text() if worker.markers.exists() else ""
    for line in text.splitlines():
        kind, view_class, *positions = line.split()
        name = VIEW_NAMES[view_class]
        if kind == "start":
            begun[name] = (int(positions[0]), int(positions[1]))
        else:
            del begun[name]
    return begun


def batches_cut_short(world: World, worker: Worker) -> list[str]:
    """The batches the kill interrupted: begun, never committed.

    A batch marked `start` but not `end` was either cut short (the view is still
    where the batch began) or killed just after its commit (the view is where it ended).
    """
    cut = []
    for name, (begun_at, ends_at) in unfinished_batches(worker).items():
        view = world.projections.projections[name].view
        position = view.max_tracking_id(world.ledger.name) or 0
        assert position in (begun_at, ends_at), (name, begun_at, ends_at, position)
        if position == begun_at:
            cut.append(f"{name} ({begun_at}, {ends_at}]")
    return cut


def crash_and_recover(
    world: World, url: str, workdir: Path, *, mode: str, batch_size: int, seed: int
) -> list[str]:
    """Writes all along while a worker is killed KILLS times, restarted each time, and
    finally left to catch up; the batches the kills cut short."""
    rng, writer, cut = random.Random(seed), Writer(world), []
    worker: Worker | None = None
    try:
        # Thousands of events wait for the first worker.
        writer.start()
        wait_for_head(world, BACKLOG)
        writer.pace = PACE
        # Kill it at random moments while it works and the writes go on; restart it.
        for life in range(KILLS):
            worker = start_worker(url, mode, batch_size, workdir, life)
            time.sleep(rng.uniform(0.0, 0.4))  # the random moment of the crash, not a wait
            kill(worker)
            wait_until_elections_are_free(world)
            cut += batches_cut_short(world, worker)
        # The writes stop; the last worker catches up and is stopped as an operator would.
        worker = start_worker(url, mode, PRODUCTION_BATCH_SIZE, workdir, KILLS)
        writer.stop()
        last = head(world)
        assert last >= 2 * BACKLOG, last
        for name, projection in world.projections.projections.items():
            assert projection.view.progress.wait_for(last, timeout=60), f"{name} lags"
        assert stop(worker) == 0
        return cut
    finally:
        writer.halt()
        if worker is not None and worker.process.poll() is None:
            worker.process.kill()  # a failed test leaves no worker behind
            worker.process.wait()


# ---------------------------------------------------------------- the check


@dataclass
class Stored:
    """What the event store holds, as each projection should have counted it."""

    head: int = 0
    task_events: Counter[str] = field(default_factory=Counter)
    latest: dict[str, tuple[int, int]] = field(default_factory=dict)  # → (version, position)
    feed_positions: set[int] = field(default_factory=set)
    with_deadline: set[str] = field(default_factory=set)  # created with a timeout, unfinished


def stored(world: World) -> Stored:
    found, start = Stored(), 0
    while page := world.ledger.recorder.select_notifications(
        start=start, limit=1000, inclusive_of_start=False
    ):
        for notification in page:
            cls, task = resolve_topic(notification.topic), str(notification.originator_id)
            found.head = start = notification.id
            if issubclass(cls, Task.Event | ApiKey.Event):
                found.feed_positions.add(notification.id)
            if not issubclass(cls, Task.Event):
                continue
            found.task_events[task] += 1
            found.latest[task] = (notification.originator_version, notification.id)
            if issubclass(cls, Task.TaskCreated):
                created: Any = world.ledger.mapper.to_domain_event(notification)
                if created.timeout_seconds is not None:
                    found.with_deadline.add(task)
            elif issubclass(cls, Task.TaskFinished):  # type: ignore[attr-defined]
                found.with_deadline.discard(task)
    return found


def rows(world: World, name: str, table: str) -> list[dict[str, Any]]:
    return world.projections.projections[name].view.dump()[table]


def exactly_once_problems(world: World) -> list[str]:
    """Every way the views differ from the events stored: lag, doubles, misses."""
    events, problems = stored(world), []
    for name, projection in world.projections.projections.items():
        position = projection.view.max_tracking_id(world.ledger.name) or 0
        if position != events.head:
            problems.append(f"{name} is at position {position}, the store at {events.head}")
    # Task list: each row counted each of its task's events once.
    tasks = {str(row["id"]): row for row in rows(world, "task_list", "task_list")}
    if set(tasks) != set(events.task_events):
        problems.append(f"task list rows {len(tasks)} != tasks stored {len(events.task_events)}")
    for task, count in events.task_events.items():
        row = tasks.get(task, {"events_applied": 0, "version": 0})
        if row["events_applied"] != count or row["version"] != events.latest[task][0]:
            problems.append(
                f"task {task}: {row['events_applied']} events applied, {count} stored "
                f"(version {row['version']}, stored {events.latest[task][0]})"
            )
    # Event feed: exactly the org events stored, each once.
    feed = [row["position"] for row in rows(world, "event_feed", "event_feed")]
    if feed != sorted(events.feed_positions):
        problems.append(f"event feed holds {len(feed)} events, {len(events.feed_positions)} stored")
    # Chain heads: each task's head is its latest stored event.
    heads = {
        str(row["task_id"]): (row["version"], row["position"])
        for row in rows(world, "chain_heads", "chain_heads")
    }
    if heads != events.latest:
        problems.append("chain heads differ from the latest events stored")
    # Deadlines: every task with a running timeout, and no other.
    deadlines = {str(row["task_id"]) for row in rows(world, "deadlines", "deadlines")}
    if deadlines != events.with_deadline:
        problems.append("the deadline index differs from the tasks with a running timeout")
    return problems


def rebuild_differences(world: World) -> list[str]:
    """The views whose rows a fresh rebuild does not reproduce exactly."""
    live = {name: p.view.dump() for name, p in world.projections.projections.items()}
    for name in world.projections.projections:
        world.projections.rebuild(name)
    rebuilt = {name: p.view.dump() for name, p in world.projections.projections.items()}
    return [name for name in live if live[name] != rebuilt[name]]


# ---------------------------------------------------------------- the tests


@pytest.mark.slow
def test_a_killed_worker_applies_every_event_exactly_once(
    durable_world: World, durable_store_url: str, tmp_path: Path
) -> None:
    world = durable_world
    cut = crash_and_recover(
        world,
        durable_store_url,
        tmp_path,
        mode="exactly-once",
        batch_size=PRODUCTION_BATCH_SIZE,
        seed=1,
    )
    # Kills landed inside batches (begun, never committed)...
    assert cut, "no kill landed inside a batch: the test proved nothing"
    # ...and still every projection applied each stored event exactly once...
    assert exactly_once_problems(world) == []
    # ...and the read models equal a fresh rebuild, row by row.
    assert rebuild_differences(world) == []


@pytest.mark.slow
# The control proves the check can see a double apply; one store shows that (the
# real worker is proved on both).
@pytest.mark.parametrize("durable_store_url", ["sqlite"], indirect=True)
def test_the_check_catches_a_worker_that_commits_its_position_separately(
    durable_world: World, durable_store_url: str, tmp_path: Path
) -> None:
    world = durable_world
    crash_and_recover(
        world,
        durable_store_url,
        tmp_path,
        mode="split-commit",
        batch_size=CONTROL_BATCH_SIZE,
        seed=2,
    )
    # The same check that passes the real worker fails this one: batches applied twice.
    problems = exactly_once_problems(world)
    assert any("events applied" in problem for problem in problems), (
        "the control worker was never caught: the check is blind"
    )


def test_rebuild_produces_exactly_the_tables_the_live_runner_produced(world: World) -> None:
    # A live runner follows a scripted history of over a thousand events.
    world.projections.start()
    history = scripted_history(world.ledger, tasks=130, clock=world.clock)
    head = world.ledger.recorder.max_notification_id() or 0
    assert head >= 1000
    for name, projection in world.projections.projections.items():
        assert projection.view.progress.wait_for(head, timeout=30), name
    world.projections.stop()
    live = {name: p.view.dump() for name, p in world.projections.projections.items()}
    assert len(live["task_list"]["task_list"]) == len(history.tasks)
    # Rebuilding from position 0 produces exactly the same rows.
    reached = []
    for name in world.projections.projections:
        result = world.projections.rebuild(name, on_batch=lambda p, _n: reached.append(p))
        assert result.position == head
    assert reached[-1] == head
    rebuilt = {name: p.view.dump() for name, p in world.projections.projections.items()}
    assert rebuilt == live
