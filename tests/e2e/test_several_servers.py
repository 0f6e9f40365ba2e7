"""Several real `tasktrail serve` processes on one PostgreSQL schema.

They start together on a schema with no tables (the migration runs once, under a
lock), share the work of one task's parallel jobs, honour a key revoked through
another process at once, record a timeout exactly once, and when the process doing
the background work is killed, another takes over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from projections.coordination import advisory_lock_holders, store_lock_key
from projections.runtime import CATALOGUE
from projections.timeout_enforcer import ENFORCER
from store.config import StoreConfig
from tests.conftest import admin_connect
from tests.e2e.test_serve_postgres import ADMIN, free_port, tasktrail_script

JOBS = 8
STEPS = 3


class Server:
    def __init__(self, process: subprocess.Popen[bytes], base: str):
        self.process = process
        self.base = base

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Polls `condition`; returns the seconds it took (fails after `timeout`)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def servers(pg_url: str, tmp_path: Path) -> Iterator[Callable[[], Server]]:
    """Starts `tasktrail serve` processes on one schema; stops (or reaps) them afterwards."""
    started: list[Server] = []
    env = {
        **os.environ,
        # Four servers starting at once on two busy cores can wait over the default
        # 3 s for a connection; this test is about the start racing, not that wait.
        "TASKTRAIL_DATABASE_URL": f"{pg_url}{'&' if '?' in pg_url else '?'}connect_timeout=10",
        "TASKTRAIL_ADMIN_TOKEN": ADMIN,
        "TASKTRAIL_VAR_DIR": str(tmp_path / "var"),
        "TASKTRAIL_LOG_LEVEL": "warning",
    }

    def start() -> Server:
        port = free_port()
        process = subprocess.Popen(
            [tasktrail_script(), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        server = Server(process, f"http://127.0.0.1:{port}")
        started.append(server)
        return server

    try:
        yield start
    finally:
        outputs = []
        for server in started:
            if server.process.poll() is None:
                server.process.terminate()
        for server in started:
            try:
                output, _ = server.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                output, _ = server.process.communicate()
            if server.process.returncode != -signal.SIGKILL:
                outputs.append(output.decode())
        for text in outputs:
            assert "Traceback" not in text, text


def issue_key(base: str) -> tuple[str, str]:
    """A writer key of org acme issued through the server at `base`: (id, token)."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        key = admin.post("/v1/api-keys", json={"org": "acme", "role": "writer", "name": "exec"})
    assert key.status_code == 201, key.text
    return str(key.json()["id"]), str(key.json()["token"])


def writer_token(base: str) -> str:
    return issue_key(base)[1]


AUTHOR = {"id": "u-42", "name": "Alice", "kind": "user"}


def create_task(client: httpx.Client, jobs: list[dict[str, Any]], **extra: Any) -> str:
    created = client.post(
        "/v1/tasks",
        json={
            "type": "app.deploy",
            "title": "Deploy",
            "kind": "executable",
            "author": AUTHOR,
            "jobs": jobs,
            **extra,
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def report(client: httpx.Client, task_id: str, **transition: Any) -> httpx.Response:
    return client.post(f"/v1/tasks/{task_id}/transitions", json={"transitions": [transition]})


def timeline_types(client: httpx.Client, task_id: str) -> list[str]:
    response = client.get(f"/v1/tasks/{task_id}/timeline")
    assert response.status_code == 200, response.text
    return [e["type"] for e in response.json()["events"]]


def status(client: httpx.Client, task_id: str) -> str:
    return str(client.get(f"/v1/tasks/{task_id}").json()["status"])


def test_four_servers_started_at_the_same_instant_on_an_empty_schema_all_become_ready(
    servers: Callable[[], Server], pg_url: str
) -> None:
    schema = pg_url.rsplit("schema=", 1)[1]
    with admin_connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchone()
    assert row is not None and row[0] == 0
    four = [servers() for _ in range(4)]
    wait_until(lambda: all(s.ready() for s in four), 60, "four servers to become ready")
    assert all(s.process.poll() is None for s in four)


@pytest.fixture
def two(servers: Callable[[], Server]) -> tuple[Server, Server]:
    """Two servers, started one after the other: the first is elected for the background."""
    first = servers()
    wait_until(first.ready, 20, "the first server")
    second = servers()
    wait_until(second.ready, 20, "the second server")
    return first, second


def test_two_servers_share_the_parallel_jobs_of_one_task(two: tuple[Server, Server]) -> None:
    token = writer_token(two[0].base)
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=s.base, headers=headers, timeout=10) for s in two]
    try:
        jobs = [
            {
                "key": f"j{j}",
                "name": f"Job {j}",
                "steps": [{"key": f"s{s}", "name": f"Step {s}"} for s in range(STEPS)],
            }
            for j in range(JOBS)
        ]
        task_id = create_task(clients[0], jobs)
        errors: list[str] = []

        def run_job(j: int) -> None:
            n = 0
            for s in range(STEPS):
                for state in ("in_progress", "done"):
                    client = clients[(j + n) % 2]  # alternating between the two servers
                    n += 1
                    response = report(client, task_id, job=f"j{j}", step=f"s{s}", status=state)
                    if response.status_code != 200:
                        errors.append(f"j{j} s{s} {state}: {response.status_code} {response.text}")

        threads = [threading.Thread(target=run_job, args=(j,)) for j in range(JOBS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        assert status(clients[1], task_id) == "done"
        events = clients[1].get(f"/v1/tasks/{task_id}/timeline").json()["events"]
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))
        # Every step's two transitions, exactly once each.
        seen = [
            (e["data"]["job"], e["data"]["step"], e["type"])
            for e in events
            if e["type"] in ("StepStarted", "StepFinished")
        ]
        assert len(seen) == len(set(seen)) == JOBS * STEPS * 2, seen
        assert [e["type"] for e in events].count("TaskFinished") == 1
    finally:
        for client in clients:
            client.close()


def list_tasks(base: str, token: str) -> httpx.Response:
    return httpx.get(f"{base}/v1/tasks", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_a_key_revoked_through_one_server_is_refused_by_the_other_at_once(
    two: tuple[Server, Server],
) -> None:
    a, b = two
    key_id, token = issue_key(a.base)
    _, other_token = issue_key(a.base)
    # The key issued through A works on B, which now has it in its key cache.
    assert list_tasks(b.base, token).status_code == 200
    assert list_tasks(b.base, token).status_code == 200
    # Revoked through A.
    with httpx.Client(base_url=a.base, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        revoked = admin.delete(f"/v1/api-keys/{key_id}")
    assert revoked.status_code == 204, revoked.text
    # B's very next request with it is refused: no polling, no grace period.
    refused = list_tasks(b.base, token)
    assert refused.status_code == 401, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["status"] == 401
    # Only that key: another key of the same org still works on B.
    assert list_tasks(b.base, other_token).status_code == 200


def test_a_timeout_with_both_servers_running_is_recorded_once(
    two: tuple[Server, Server],
) -> None:
    token = writer_token(two[0].base)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=two[1].base, headers=headers, timeout=10) as client:
        jobs = [{"key": "build", "name": "Build", "steps": [{"key": "clone", "name": "Clone"}]}]
        task_id = create_task(client, jobs, timeout_seconds=1)
        started = report(client, task_id, job="build", step="clone", status="in_progress")
        assert started.status_code == 200, started.text
        wait_until(lambda: status(client, task_id) == "timed_out", 10, "the timeout")
        # Give a racing enforcer time to record a second one, were it possible.
        time.sleep(1.0)
        assert timeline_types(client, task_id).count("TaskTimedOut") == 1
        late = report(client, task_id, job="build", step="clone", status="done")
        assert late.status_code == 409, late.text


def background_holders(pg_url: str) -> set[int]:
    """The backend pids holding the background roles' advisory locks (every role held)."""
    store = StoreConfig.from_url(pg_url)
    roles = (*CATALOGUE, ENFORCER)
    keys = [store_lock_key(store.pg_dbname, store.pg_schema, role) for role in roles]
    with admin_connect() as conn:
        held = advisory_lock_holders(conn, keys)
    return set(held.values()) if len(held) == len(keys) else set()


def test_when_the_background_process_dies_the_other_takes_over(
    two: tuple[Server, Server], pg_url: str
) -> None:
    first, second = two
    # One process holds every background role (the first, elected at its start).
    wait_until(lambda: len(background_holders(pg_url)) > 0, 5, "the background roles")
    before = background_holders(pg_url)
    token = writer_token(second.base)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=second.base, headers=headers, timeout=10) as client:
        jobs = [{"key": "build", "name": "Build", "steps": [{"key": "clone", "name": "Clone"}]}]
        task_id = create_task(client, jobs, timeout_seconds=2)
        started = report(client, task_id, job="build", step="clone", status="in_progress")
        assert started.status_code == 200, started.text
        # The first server, started first, was elected: kill it without a chance to clean up.
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(5)
        killed = time.monotonic()
        took = wait_until(
            lambda: bool(background_holders(pg_url)) and not background_holders(pg_url) & before,
            10,
            "the other server to take the background roles over",
        )
        fired = wait_until(lambda: status(client, task_id) == "timed_out", 15, "the timeout")
        print(
            f"take-over: roles taken {took:.2f} s after the kill; "
            f"the pending timeout fired {took + fired:.2f} s after it"
        )
        assert timeline_types(client, task_id).count("TaskTimedOut") == 1
        assert time.monotonic() - killed < 15
