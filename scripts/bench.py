"""Benchmarks over real sockets, each beside a baseline measured in the same run.

    scripts/bench [--quick] [--json PATH] [--database postgres|sqlite]

Starts its own `tasktrail serve` on a fresh PostgreSQL schema (or SQLite file),
generates load from a separate process on loopback, bounded in time, and prints a
Markdown table. Benchmarks are not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psycopg

PG_URL = os.environ.get("TASKTRAIL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN = "tt_admin_bench"
CLIENTS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(kind: str):  # type: ignore[no-untyped-def]
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.sqlite"
        return
    schema = f"bench_{uuid4().hex[:10]}"
    conninfo = "host=127.0.0.1 user=postgres dbname=test"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextmanager
def server(database_url: str, var_dir: str):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {
        **os.environ,
        "TASKTRAIL_DATABASE_URL": database_url,
        "TASKTRAIL_ADMIN_TOKEN": ADMIN,
        "TASKTRAIL_VAR_DIR": var_dir,
        "TASKTRAIL_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _load(
    base: str, token: str, seconds: float, make_request: Any, clients: int = CLIENTS
) -> dict[str, Any]:
    """`clients` concurrent loops for `seconds`; each calls make_request(client, n)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:

        async def loop(worker: int) -> None:
            nonlocal errors
            n = 0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await make_request(client, worker, n)
                latencies.append(time.perf_counter() - started)
                if response.status_code >= 300:
                    errors += 1
                n += 1

        started = time.monotonic()
        await asyncio.gather(*(loop(w) for w in range(clients)))
        elapsed = time.monotonic() - started
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": errors,
    }


def run_load(
    base: str, token: str, seconds: float, kind: str, context: dict[str, Any]
) -> dict[str, Any]:
    """Runs one load pattern in a separate process (the load generator is not the server)."""
    spec = json.dumps({"base": base, "token": token, "seconds": seconds, "kind": kind, **context})
    output = subprocess.run(
        [sys.executable, __file__, "--load", spec], capture_output=True, text=True, check=True
    )
    return dict(json.loads(output.stdout))


def load_main(spec: dict[str, Any]) -> None:
    kind = spec["kind"]

    async def healthz(client: httpx.AsyncClient, worker: int, n: int) -> httpx.Response:
        return await client.get("/healthz")

    async def get_task(client: httpx.AsyncClient, worker: int, n: int) -> httpx.Response:
        return await client.get(f"/v1/tasks/{spec['task_id']}")

    async def transition(client: httpx.AsyncClient, worker: int, n: int) -> httpx.Response:
        # Each worker walks the steps of its own task: start, finish, start, finish...
        task_id = spec["tasks"][worker]
        step = n // 2
        status = "in_progress" if n % 2 == 0 else "done"
        return await client.post(
            f"/v1/tasks/{task_id}/transitions",
            json={"transitions": [{"job": "work", "step": f"s{step}", "status": status}]},
        )

    make = {"healthz": healthz, "get_task": get_task, "transition": transition}[kind]
    clients = spec.get("clients", CLIENTS)
    result = asyncio.run(_load(spec["base"], spec["token"], spec["seconds"], make, clients))
    print(json.dumps(result))


def setup(base: str, steps: int, tasks: int) -> tuple[str, list[str]]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    key = httpx.post(
        f"{base}/v1/api-keys",
        json={"org": "bench", "role": "writer", "name": "bench"},
        headers=admin,
    ).json()["token"]
    headers = {"Authorization": f"Bearer {key}"}
    plan = [
        {
            "key": "work",
            "name": "Work",
            "steps": [{"key": f"s{i}", "name": f"Step {i}"} for i in range(steps)],
        }
    ]
    ids = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for _ in range(tasks):
            body = {
                "type": "bench.run",
                "title": "bench",
                "kind": "executable",
                "author": {"id": "b", "name": "Bench", "kind": "system"},
                "jobs": plan,
            }
            ids.append(client.post("/v1/tasks", json=body).json()["id"])
    return key, ids


def grow_task(base: str, token: str, task_id: str, steps: int) -> int:
    """Reports every step of a task, so that it has about 2 * steps + a few events."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for i in range(steps):
            client.post(
                f"/v1/tasks/{task_id}/transitions",
                json={
                    "transitions": [
                        {"job": "work", "step": f"s{i}", "status": "in_progress"},
                        {"job": "work", "step": f"s{i}", "status": "done"},
                    ]
                },
            )
        return int(client.get(f"/v1/tasks/{task_id}").json()["version"])


def bench(kind: str, seconds: float) -> list[dict[str, Any]]:
    rows = []
    with database(kind) as url, tempfile.TemporaryDirectory() as var, server(url, var) as base:
        print(f"[{kind}] setting up tasks...", file=sys.stderr)
        token, tasks = setup(base, steps=200, tasks=CLIENTS + 1)
        version = grow_task(base, token, tasks[-1], 97)
        print(f"[{kind}] task with {version} events ready; measuring...", file=sys.stderr)
        health = run_load(base, token, seconds, "healthz", {})
        reads = run_load(base, token, seconds, "get_task", {"task_id": tasks[-1]})
        writes = run_load(base, token, seconds, "transition", {"tasks": tasks[:CLIENTS]})
        alone = run_load(base, token, seconds, "get_task", {"task_id": tasks[-1], "clients": 1})
        rows.append({"store": kind, "figure": "GET /healthz (baseline)", **health})
        rows.append(
            {
                "store": kind,
                "figure": f"GET /v1/tasks/{{id}} ({version} events)",
                **reads,
                "ratio": reads["rps"] / health["rps"],
            }
        )
        rows.append({"store": kind, "figure": "POST /transitions (1 transition)", **writes})
        rows.append(
            {"store": kind, "figure": f"GET /v1/tasks/{{id}} ({version} events), 1 client", **alone}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (5 s each)")
    parser.add_argument("--smoke", action="store_true", help="1 s runs: proves it works")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--database", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_main(json.loads(args.load))
        return
    seconds = 1.0 if args.smoke else 5.0 if args.quick else 15.0
    kinds = ["postgres", "sqlite"] if args.database == "both" else [args.database]
    rows = [row for kind in kinds for row in bench(kind, seconds)]
    print(f"\n{CLIENTS} concurrent clients, 1 web worker, {seconds:.0f} s per figure\n")
    print("| store | figure | req/s | p50 ms | p99 ms | errors | ratio to baseline |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        print(
            f"| {r['store']} | {r['figure']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['errors']} | {ratio} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
