"""Exactly-once across crashes, and rebuilds that reproduce the live tables exactly.

A runner in a real process is SIGKILLed at random moments while it works through
thousands of events; afterwards no event is applied twice or missed (compared with
the events stored, never with position contiguity: positions have gaps by design)
and the read model equals a fresh rebuild, row by row. A deliberately broken runner
(rows and position committed separately) is the control: the same check must catch it.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domain.api_key import ApiKey
from domain.task import Task
from projections.batched import _event_class
from tests.projections.conftest import World, open_world
from tests.projections.history import scripted_history

ROOT = Path(__file__).resolve().parents[2]
BATCH_SIZE = 20
PAUSE = 0.004  # seconds, after each commit (control: between its two commits)


@pytest.fixture(params=["sqlite", "postgres"])
def durable_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The stores a second process can share: SQLite and PostgreSQL (not memory)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def durable_world(durable_store_url: str) -> Iterator[World]:
    with open_world(durable_store_url) as world:
        yield world


def stored_events(world: World) -> tuple[Counter[Any], set[int]]:
    """Events per task, and the positions an org feed must hold, read from the store."""
    per_task: Counter[Any] = Counter()
    feed_positions: set[int] = set()
    start = 0
    while True:
        page = world.ledger.recorder.select_notifications(
            start=start, limit=1000, inclusive_of_start=False
        )
        for notification in page:
            cls = _event_class(notification.topic)
            if issubclass(cls, Task.Event):
                per_task[str(notification.originator_id)] += 1
            if issubclass(cls, Task.Event | ApiKey.Event):
                feed_positions.add(notification.id)
        if len(page) < 1000:
            return per_task, feed_positions
        start = page[-1].id


def double_applied(world: World) -> list[Any]:
    """Tasks whose row counted more events than the task has: applied twice."""
    rows = world.projections.task_list.dump()["task_list"]
    return [row["id"] for row in rows if row["events_applied"] != row["version"]]


def run_child(url: str, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.projections.crash_child",
            url,
            mode,
            str(BATCH_SIZE),
            str(PAUSE),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def kill_at_random(child: subprocess.Popen[str], rng: random.Random) -> None:
    time.sleep(rng.uniform(0.0, 0.15))  # the random moment of the crash, not a wait
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.stdout is not None
    child.stdout.close()


def write_more(world: World, tasks: int, seed: int) -> None:
    scripted_history(world.ledger, tasks=tasks, seed=seed, clock=world.clock)


@pytest.mark.slow
def test_killed_runners_apply_every_event_exactly_once(
    durable_world: World, durable_store_url: str
) -> None:
    world, rng = durable_world, random.Random(1)
    # Thousands of events wait for the runner.
    write_more(world, 350, seed=1)
    assert (world.ledger.recorder.max_notification_id() or 0) >= 2500
    # Kill it at random moments while it works, with more writes between the crashes.
    kills_mid_work = 0
    for round_ in range(6):
        child = run_child(durable_store_url, "exactly-once")
        kill_at_random(child, rng)
        head = world.ledger.recorder.max_notification_id() or 0
        positions = [p.view.position() for p in world.projections.projections.values()]
        killed = child.returncode == -signal.SIGKILL
        kills_mid_work += killed and min(positions) < head
        write_more(world, 10, seed=100 + round_)
    assert kills_mid_work >= 5
    # Let it finish.
    child = run_child(durable_store_url, "exactly-once")
    assert child.wait(timeout=120) == 0
    assert child.stdout is not None
    child.stdout.close()
    # Nothing applied twice, nothing missed: each row counted exactly its task's events...
    per_task, feed_positions = stored_events(world)
    rows = {str(row["id"]): row for row in world.projections.task_list.dump()["task_list"]}
    assert set(rows) == set(per_task)
    assert all(rows[i]["events_applied"] == rows[i]["version"] == n for i, n in per_task.items())
    # ...and the feed holds exactly the org events stored.
    feed = world.projections.event_feed.dump()["event_feed"]
    assert [row["position"] for row in feed] == sorted(feed_positions)
    # The read model equals a fresh rebuild, row by row.
    before = {name: p.view.dump() for name, p in world.projections.projections.items()}
    for name in world.projections.projections:
        world.projections.rebuild(name)
    after = {name: p.view.dump() for name, p in world.projections.projections.items()}
    assert after == before


@pytest.mark.slow
def test_the_check_catches_a_runner_that_commits_its_position_separately(
    durable_world: World, durable_store_url: str
) -> None:
    world, rng = durable_world, random.Random(2)
    write_more(world, 350, seed=1)
    # Kill the broken runner at random moments until a batch was applied twice.
    for _ in range(15):
        child = run_child(durable_store_url, "split-commit")
        kill_at_random(child, rng)
        if double_applied(world):
            break
    # The same check that passes the real runner fails this one.
    assert double_applied(world), "the control runner was never caught: the check is blind"


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
