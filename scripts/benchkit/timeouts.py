"""`scripts/bench --timeouts`: hard-timeout latency and background take-over on PostgreSQL.

Two real `tasktrail serve` processes share a fresh database, as a deployment of two
hosts would; one of them holds the background roles (projection runners and the
timeout enforcer), the other is the hot standby.

1. Latency: `tasks` executable tasks with a timeout of `TIMEOUT_SECONDS`, started
   at a steady pace (so deadlines fall one after another rather than all at once).
   Nobody calls about them again; for each, the latency is the `TaskTimedOut` event's
   `recorded_at` minus the deadline (`started_at + timeout_seconds`), both stamped by
   the service. Prints p50, p99 and the worst, and checks each task has exactly one
   `TaskTimedOut`.
2. Take-over, `rounds` times: with a timeout due about a second later, kill -9 the
   process holding the background roles (found through PostgreSQL's advisory locks);
   measure the seconds until the standby holds every role, and how late past its
   deadline the pending timeout is recorded; then start a fresh standby for the next
   round.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from benchkit.databases import fresh_database
from benchkit.progress import Progress, say
from benchkit.servers import Process, tasktrail_env
from projections.coordination import advisory_lock_holders, store_lock_key
from projections.runtime import CATALOGUE
from projections.timeout_enforcer import ENFORCER
from store.config import StoreConfig

TIMEOUT_SECONDS = 2
JOBS = [{"key": "build", "name": "Build", "steps": [{"key": "run", "name": "Run"}]}]


class Server(Process):
    def __init__(self, name: str, url: str, workdir: Path):
        tasktrail = str(Path(sys.executable).with_name("tasktrail"))
        command = [tasktrail, "serve", "--workers", "1"]
        super().__init__(name, command, tasktrail_env(url, workdir), workdir)


def role_holders(conninfo: str, store: StoreConfig) -> set[int]:
    """Backend pids holding the background roles' advisory locks (empty unless all held)."""
    roles = (*CATALOGUE, ENFORCER)
    keys = [store_lock_key(store.pg_dbname, store.pg_schema, role) for role in roles]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        held = advisory_lock_holders(conn, keys)
    return set(held.values()) if len(held) == len(keys) else set()


def started_task(server: Process, token: str, timeout: int = TIMEOUT_SECONDS) -> str:
    body = {"org": "bench", "type": "app.deploy", "title": "timeout bench",
            "kind": "executable", "timeout_seconds": timeout,
            "author": {"id": "u-1", "name": "Bench", "kind": "user"}, "jobs": JOBS}  # fmt: skip
    status, created = server.request("POST", "/v1/tasks", body, token)
    assert status == 201, created
    start = {"transitions": [{"job": "build", "step": "run", "status": "in_progress"}]}
    status, task = server.request("POST", f"/v1/tasks/{created['id']}/transitions", start, token)
    assert status == 200, task
    return str(created["id"])


def timed_out_latency(server: Process, token: str, task_id: str) -> float | None:
    """Seconds from the deadline to the recorded `TaskTimedOut`; None while not timed out."""
    status, task = server.request("GET", f"/v1/tasks/{task_id}", token=token)
    assert status == 200, task
    if task["status"] != "timed_out":
        return None
    status, timeline = server.request("GET", f"/v1/tasks/{task_id}/timeline", token=token)
    assert status == 200, timeline
    recorded = [e["recorded_at"] for e in timeline["events"] if e["type"] == "TaskTimedOut"]
    assert len(recorded) == 1, f"{task_id}: {len(recorded)} TaskTimedOut events"
    deadline = parse(task["started_at"]).timestamp() + task["timeout_seconds"]
    return parse(recorded[0]).timestamp() - deadline


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def writer_token(server: Process) -> str:
    body = {"name": "timeouts bench", "role": "writer", "org": "bench"}
    status, key = server.request("POST", "/v1/api-keys", body)
    assert status == 201, key
    return str(key["token"])


def measure_latency(server: Process, token: str, tasks: int, pace: float) -> list[float]:
    progress = Progress("start tasks", tasks, "tasks")
    started = []
    for _ in range(tasks):
        began = time.monotonic()
        started.append(started_task(server, token))
        progress.advance()
        time.sleep(max(0.0, pace - (time.monotonic() - began)))
    progress.close()
    latencies: dict[str, float] = {}
    progress = Progress("wait for their timeouts", tasks, "timed out")
    give_up = time.monotonic() + TIMEOUT_SECONDS + 60
    while len(latencies) < tasks and time.monotonic() < give_up:
        for task_id in started:
            if task_id not in latencies:
                latency = timed_out_latency(server, token, task_id)
                if latency is not None:
                    latencies[task_id] = latency
                    progress.advance()
        time.sleep(0.2)
    progress.close()
    assert len(latencies) == tasks, f"only {len(latencies)} of {tasks} timed out"
    return list(latencies.values())


def measure_takeover(
    holder: Server, standby: Server, conninfo: str, store: StoreConfig, token: str
) -> tuple[float, float]:
    """(seconds from the kill until the standby holds every role, seconds the pending
    timeout, due about a second after the kill, was recorded past its deadline)."""
    task_id = started_task(standby, token, timeout=1)
    before = role_holders(conninfo, store)
    holder.process.kill()
    holder.process.wait(5)
    killed = time.monotonic()
    while not (role_holders(conninfo, store) - before) or role_holders(conninfo, store) & before:
        if time.monotonic() - killed > 30:
            raise RuntimeError("the standby did not take the background roles over in 30 s")
        time.sleep(0.02)
    took = time.monotonic() - killed
    while (late := timed_out_latency(standby, token, task_id)) is None:
        if time.monotonic() - killed > 30:
            raise RuntimeError("the pending timeout was not recorded after the take-over")
        time.sleep(0.05)
    return took, late


def bench_timeouts(tasks: int, rounds: int) -> None:
    with fresh_database("postgres") as database:
        store = database.store
        conninfo = store.conninfo()
        say(f"two tasktrail serve processes on {database.url}")
        servers = [Server("serve-a", database.url, database.workdir)]
        try:
            deadline = time.monotonic() + 30
            while not role_holders(conninfo, store):
                assert time.monotonic() < deadline, "no process took the background roles"
                time.sleep(0.1)
            servers.append(Server("serve-b", database.url, database.workdir))
            token = writer_token(servers[0])
            latencies = measure_latency(servers[1], token, tasks, pace=0.05)
            takeovers = []
            for round_ in range(rounds):
                holder, standby = servers[-2], servers[-1]
                takeovers.append(measure_takeover(holder, standby, conninfo, store, token))
                roles, late = takeovers[-1]
                say(f"take-over {round_ + 1}: roles in {roles:.2f} s, the pending timeout "
                    f"recorded {late:.2f} s past its deadline")  # fmt: skip
                servers.append(Server(f"serve-{round_ + 3}", database.url, database.workdir))
        finally:
            for server in servers:
                server.stop()
    print(report(latencies, takeovers))


def report(latencies: list[float], takeovers: list[tuple[float, float]]) -> str:
    ms = [1000 * value for value in latencies]
    roles = [took for took, _ in takeovers]
    late = [past for _, past in takeovers]
    rows: list[Any] = [
        ("timeout latency, deadline → recorded `TaskTimedOut`, p50",
         f"{percentile(ms, 0.5):.0f} ms"),
        ("the same, p99", f"{percentile(ms, 0.99):.0f} ms"),
        ("the same, worst / best", f"{max(ms):.0f} / {min(ms):.0f} ms"),
        ("tasks timed out (each exactly one `TaskTimedOut`)", f"{len(ms)}"),
        ("take-over after kill -9: every role held by the standby, median (range)",
         f"{statistics.median(roles):.2f} s ({min(roles):.2f} to {max(roles):.2f})"),
        ("the pending timeout (due about 1 s after the kill), recorded past its deadline, "
         "median (range)",
         f"{statistics.median(late):.2f} s ({min(late):.2f} to {max(late):.2f})"),
    ]  # fmt: skip
    lines = ["| figure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)
