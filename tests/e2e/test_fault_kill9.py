"""kill -9 under load: every acknowledged write is stored exactly once.

A real `tasktrail serve` process is killed (SIGKILL: no shutdown, requests cut off
mid-write) ten times at random moments while eight clients drive tasks through their
life, about 2,000 writes in all (on PostgreSQL; a shorter run on SQLite). The test
restarts it on the same port at once. Each client retries every write with its own
Idempotency-Key until it is answered. Afterwards every acknowledged write is found
exactly once through the API (each create as one task with its unique title, each
transition as one event in its task's timeline), and after each restart the first
write is acknowledged within 10 s.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.faults import (
    WRITES_PER_TASK,
    ServeProcess,
    Writers,
    check_exactly_once,
    figures,
    serving,
    wait_until,
    writer_token,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CLIENTS = 8
# Kills, and tasks per client, by store. PostgreSQL, the production store, gets the
# whole run: 10 kills, 8 clients x 19 tasks x 13 writes = 1,976 writes. SQLite gets a
# shorter one (3 kills, 416 writes), to keep the fault suite within two minutes.
SCALE = {"postgres": (10, 19), "sqlite": (3, 4)}
RECOVERY_LIMIT = 10.0


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'faults.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    with serving(database_url, tmp_path) as process:
        yield process


def test_writes_acknowledged_around_kill_9s_are_stored_exactly_once(
    backend: str, server: ServeProcess
) -> None:
    kills, tasks_per_client = SCALE[backend]
    token = writer_token(server.url)
    writers = Writers(server.url, token, clients=CLIENTS, tasks_per_client=tasks_per_client)
    total = CLIENTS * tasks_per_client * WRITES_PER_TASK
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Kill points spread over the run (by writes acknowledged), each a random moment.
    kill_points = sorted(rng.sample(range(total // 20, total * 9 // 10), kills))
    recoveries: list[float] = []
    started = time.monotonic()
    writers.start()
    try:
        for point in kill_points:
            wait_until(lambda p=point: writers.acknowledged() >= p, 60, f"{point} writes")  # type: ignore[misc]
            time.sleep(rng.uniform(0, 0.2))
            server.kill()
            restarted = server.start()
            wait_until(
                lambda r=restarted: writers.first_ack_after(r) is not None,  # type: ignore[misc]
                30,
                "a write acknowledged after the restart",
            )
            first = writers.first_ack_after(restarted)
            assert first is not None
            recoveries.append(first - restarted)
    finally:
        writers.join(180)
    elapsed = time.monotonic() - started

    stored = check_exactly_once(server.url, token, writers)
    print(
        figures(
            f"kill -9 x{server.kills} ({backend}, seed {seed})",
            writers,
            store=stored.summary(),
            recovery_seconds=" ".join(f"{r:.2f}" for r in recoveries),
            max_recovery=f"{max(recoveries):.2f} s",
            wall_time=f"{elapsed:.1f} s",
        )
    )
    assert server.kills == kills
    assert not writers.tally.unexpected, (writers.tally.unexpected[:5], server.crashes()[:1])
    assert stored.tried == stored.acknowledged == total, stored.summary()
    assert stored.lost == [], stored.lost[:10]
    assert stored.duplicated == [], stored.duplicated[:10]
    assert stored.stored_unacknowledged == []
    assert stored.found_once == total
    assert max(recoveries) <= RECOVERY_LIMIT, recoveries
    assert server.crashes() == []
