"""`tasktrail serve --workers N` on PostgreSQL: N web processes, the background work once.

The projection runners, the timeout enforcer and the checkpoint writer run in the
supervising process, not in each web process; `/metrics` sums every process, whichever
web process answers; `tasktrail worker` can do the background work for a `serve` that
does none; SIGTERM lets an in-flight download finish, then stops the background work.

Which process holds a role is read from PostgreSQL (the advisory lock's session and its
client port) and from /proc (which process owns the socket on that port).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from projections.checkpoint_writer import CHECKPOINT_WRITER
from projections.coordination import advisory_lock_holders, store_lock_key
from projections.runtime import CATALOGUE
from projections.timeout_enforcer import ENFORCER
from store.config import StoreConfig
from tests.conftest import admin_connect
from tests.e2e.faults import wait_until, writer_token
from tests.e2e.test_serve_postgres import ADMIN, free_port
from tests.e2e.test_several_servers import create_task, report, status, timeline_types

pytestmark = pytest.mark.postgres

TASKTRAIL = str(Path(sys.executable).with_name("tasktrail"))
ROLES = (*CATALOGUE, ENFORCER, CHECKPOINT_WRITER)
STARTED = "Application startup complete."
ONE_STEP = [{"key": "build", "name": "Build", "steps": [{"key": "clone", "name": "Clone"}]}]
MIB = 1024 * 1024


# ---------------------------------------------------------------------- processes


class Launched:
    """A `tasktrail` process; its output (JSON log lines) goes to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.command = args[0]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        if self.command == "serve":
            args = [*args, "--port", str(self.port)]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [TASKTRAIL, *args], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """Every log line (each must be JSON)."""
        return [json.loads(line) for line in self.output().splitlines() if line.strip()]

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def web_processes_started(self) -> int:
        return self.output().count(STARTED)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def launch(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., Launched]]:
    """Starts `tasktrail` processes on one fresh schema; stops them, and checks that none
    wrote a traceback or a line that is not JSON."""
    launched: list[Launched] = []

    def start(*args: str, **env: str) -> Launched:
        environment = {
            **os.environ,
            # 10 s, not 3, for a connection: three processes importing and connecting at
            # once on a busy 2-core machine must not fail their start-up.
            "TASKTRAIL_DATABASE_URL": f"{pg_url}&connect_timeout=10",
            "TASKTRAIL_ADMIN_TOKEN": ADMIN,
            "TASKTRAIL_VAR_DIR": str(tmp_path / "var"),
            "TASKTRAIL_LOG_LEVEL": "info",
            **env,
        }
        process = Launched(list(args), environment, tmp_path / f"{args[0]}-{len(launched)}.log")
        launched.append(process)
        return process

    try:
        yield start
    finally:
        for process in launched:
            process.stop()
        for process in launched:
            assert "Traceback" not in process.output(), process.output()
            if process.command == "serve":  # (a worker's stdout has its readiness line)
                process.records()  # raises on a line that is not JSON


def serving_with_two_workers(launch: Callable[..., Launched], **env: str) -> Launched:
    server = launch("serve", "--workers", "2", **env)
    wait_until(lambda: server.web_processes_started() >= 2, 40, "both web processes")
    wait_until(server.ready, 10, "readiness")
    return server


# ---------------------------------------------------------------------- who holds what


def role_holders(pg_url: str, candidates: set[int]) -> dict[str, int]:
    """Each held background role → the process (among `candidates`) whose session holds it."""
    store = StoreConfig.from_url(pg_url)
    keys = {role: store_lock_key(store.pg_dbname, store.pg_schema, role) for role in ROLES}
    with admin_connect() as conn:
        held = advisory_lock_holders(conn, keys.values())
        rows = conn.execute("SELECT pid, client_port FROM pg_stat_activity").fetchall()
    port_of: dict[int, int] = {pid: port for pid, port in rows}
    process_of = processes_by_client_port(candidates)
    holders = {}
    for role, key in keys.items():
        if key in held:
            # -1: a process not among the candidates
            holders[role] = process_of.get(port_of.get(held[key], -1), -1)
    return holders


def processes_by_client_port(pids: set[int]) -> dict[int, int]:
    """The local TCP port of every socket the processes hold → the process."""
    inode_owner: dict[str, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inode_owner[target[8:-1]] = pid
    owners: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, inode = fields[1], fields[9]
            if inode in inode_owner:
                owners[int(local.rsplit(":", 1)[1], 16)] = inode_owner[inode]
    return owners


def process_tree(root: int) -> set[int]:
    """`root` and every process descended from it."""
    parent_of: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_name = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent_of[int(stat.parent.name)] = int(after_name[1])
    tree = {root}
    grew = True
    while grew:
        found = {pid for pid, parent in parent_of.items() if parent in tree}
        grew = bool(found - tree)
        tree |= found
    return tree


def held_by(pg_url: str, process: Launched) -> set[int]:
    """The processes (of `process`'s tree) holding the roles; empty unless all are held."""
    holders = role_holders(pg_url, process_tree(process.pid))
    return set(holders.values()) if len(holders) == len(ROLES) else set()


# ---------------------------------------------------------------------- clients


def writer(server: Launched) -> httpx.Client:
    token = writer_token(server.url)
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def timed_out_once(client: httpx.Client) -> None:
    """A task with a 1 s timeout, started: it times out with no request, exactly once."""
    task_id = create_task(client, ONE_STEP, timeout_seconds=1)
    started = report(client, task_id, job="build", step="clone", status="in_progress")
    assert started.status_code == 200, started.text
    wait_until(lambda: status(client, task_id) == "timed_out", 15, "the timeout")
    assert timeline_types(client, task_id).count("TaskTimedOut") == 1


def scrape(url: str) -> tuple[float | None, float | None]:
    """`/metrics` on a new connection (any web process may answer): the `/healthz`
    requests answered and the timeouts fired, as counted there."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]
    healthz = {"method": "GET", "route": "/healthz", "status": "200"}
    return (
        next((s.value for s in samples if s.name == REQUESTS and s.labels == healthz), None),
        next((s.value for s in samples if s.name == FIRED), None),
    )


REQUESTS = "tasktrail_http_requests_total"
FIRED = "tasktrail_timeouts_fired_total"


def answered_by(server: Launched, route: str) -> set[int]:
    """The processes whose access log has a line for `route`."""
    return {
        r["pid"]
        for r in server.records()
        if r["logger"] == "tasktrail.access" and r.get("route") == route
    }


# ---------------------------------------------------------------------- the tests


def test_two_workers_share_one_set_of_background_work_and_one_view_of_the_metrics(
    launch: Callable[..., Launched], pg_url: str
) -> None:
    server = serving_with_two_workers(launch)
    # The supervisor holds every background role; its two web processes none.
    wait_until(lambda: held_by(pg_url, server) == {server.pid}, 15, "the supervisor's roles")

    with writer(server) as client:
        timed_out_once(client)

    # New connections, until both web processes have answered some (the kernel chooses).
    requests = 0
    while len(answered_by(server, "/healthz")) < 2 or requests < 10:
        assert requests < 300, "one web process answered every connection"
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        requests += 1
    # Each request is counted just after its answer, and the supervisor publishes the
    # enforcer's count twice a second: wait for both, then every scrape must agree.
    wait_until(
        lambda: scrape(server.url) == (requests, 1),
        10,
        f"the metrics to count {requests} requests and 1 timeout",
    )
    scrapes = 0
    while len(answered_by(server, "/metrics")) < 2 or scrapes < 5:
        assert scrapes < 300, "one web process answered every scrape"
        assert scrape(server.url) == (requests, 1)
        scrapes += 1
    assert held_by(pg_url, server) == {server.pid}


def test_a_worker_does_the_background_work_of_a_serve_that_does_none(
    launch: Callable[..., Launched], pg_url: str
) -> None:
    server = serving_with_two_workers(launch, TASKTRAIL_RUN_PROJECTIONS="false")
    worker = launch("worker")
    wait_until(lambda: held_by(pg_url, worker) == {worker.pid}, 20, "the worker's roles")
    # None of the serve's processes stands by for a role either.
    assert set(role_holders(pg_url, process_tree(server.pid)).values()) == {-1}

    with writer(server) as client:
        timed_out_once(client)


def test_sigterm_lets_a_slow_download_finish_then_stops_the_background_work(
    launch: Callable[..., Launched], pg_url: str
) -> None:
    server = serving_with_two_workers(launch, TASKTRAIL_MAX_BODY_BYTES=str(5 * MIB))
    wait_until(lambda: held_by(pg_url, server) == {server.pid}, 15, "the supervisor's roles")
    # A step log of 16 MiB: far more than the socket buffers hold.
    chunk = ("x" * 1023 + "\n") * (4 * 1024)
    with writer(server) as client:
        task_id = create_task(client, ONE_STEP)
        started = report(client, task_id, job="build", step="clone", status="in_progress")
        assert started.status_code == 200, started.text
        log = f"/v1/tasks/{task_id}/jobs/build/steps/clone/logs"
        for _ in range(4):
            appended = client.post(
                log, content=chunk, headers={"Content-Type": "text/plain; charset=utf-8"}
            )
            assert appended.status_code == 201, appended.text

        # The download starts; the client reads a little, then SIGTERM.
        received = bytearray()
        with client.stream("GET", log, params={"format": "text"}) as response:
            assert response.status_code == 200
            blocks = response.iter_bytes()
            while len(received) < 256 * 1024:
                received += next(blocks)
            server.process.send_signal(signal.SIGTERM)
            # Still in flight: the supervisor waits for the web process, which waits for us.
            with pytest.raises(subprocess.TimeoutExpired):
                server.process.wait(1.5)
            for block in blocks:
                received += block

    assert len(received) == 4 * len(chunk) and received == chunk.encode() * 4
    assert server.process.wait(30) == 0
    messages = [r["message"] for r in server.records() if r["pid"] == server.pid]
    # The background work stopped once the web processes had finished, and let go.
    web_finished = messages.index(f"Stopping parent process [{server.pid}]")
    assert web_finished < messages.index("background work stopping"), messages
    assert role_holders(pg_url, set()) == {}
