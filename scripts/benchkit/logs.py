"""`scripts/bench --logs`: step logs on PostgreSQL against a real `tasktrail serve`.

(Formerly `scripts/bench_logs.py`.) Not part of the figures of the main run: logs
have no target in the performance issue, but their throughput and the server's
memory while it streams a large log are worth watching.

1. On a fresh database, starts `tasktrail serve` (its own process, so its memory can
   be watched from /proc).
2. Append throughput with 4 KiB chunks: one client appending in turn to one step
   over HTTP (keep-alive), eight clients each on a step of its own, and the
   application alone (in this process, no HTTP). Prints chunks/s and MiB/s.
3. Download: fills a step's log with `download_mib` MiB of 1 MiB chunks (through
   HTTP), another with a quarter of that (to show the memory does not grow with the
   log), and a third with 4 KiB chunks (written through the domain in big
   transactions, for speed). Then each is downloaded with `?format=text` from a fresh
   server process, while its resident memory is sampled every 5 ms. Prints the RSS
   before, the peak during the download, and the download's rate.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx

from benchkit.databases import fresh_database
from benchkit.servers import ADMIN_TOKEN, Process, rss_kib, tasktrail_env
from domain.log_application import StepLogs
from domain.logs import LoggedStep, StepLog
from store.config import StoreConfig

ADMIN = ADMIN_TOKEN
MIB = 1024 * 1024


def chunk_of(size: int) -> str:
    """`size` bytes of log-like text (multi-byte characters included), exactly."""
    line = "2026-11-28T12:00:00Z step output: compiling module ça/好 🚀 done\n"
    text = (line * (size // len(line.encode()) + 1)).encode()[:size].decode("utf-8", "ignore")
    return text + "." * (size - len(text.encode()))


class Server(Process):
    """`tasktrail serve` with room for very large logs."""

    def __init__(self, url: str, var_dir: Path, workers: int = 1):
        self.var_dir = var_dir
        env = {
            **tasktrail_env(url, var_dir),
            "TASKTRAIL_LOG_MAX_BYTES_PER_STEP": str(2 * 1024 * MIB),
        }
        tasktrail = str(Path(sys.executable).with_name("tasktrail"))
        super().__init__(
            "tasktrail-logs", [tasktrail, "serve", "--workers", str(workers)], env, var_dir
        )


def plan(steps: int) -> list[dict[str, Any]]:
    return [
        {"key": f"j{n}", "name": f"Job {n}", "steps": [{"key": "run", "name": "Run"}]}
        for n in range(steps)
    ]


def running_task(client: httpx.Client, steps: int) -> str:
    author = {"id": "u-1", "name": "Bench", "kind": "user"}
    body = {"org": "bench", "type": "app.deploy", "title": "bench logs", "kind": "executable",
            "author": author, "jobs": plan(steps)}  # fmt: skip
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    task_id = str(response.json()["id"])
    starts = [{"job": f"j{n}", "step": "run", "status": "in_progress"} for n in range(steps)]
    response = client.post(f"/v1/tasks/{task_id}/transitions", json={"transitions": starts})
    assert response.status_code == 200, response.text
    return task_id


def append_over_http(base: str, task_id: str, job: str, text: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "text/plain; charset=utf-8"}
    payload = text.encode()
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        path = f"/v1/tasks/{task_id}/jobs/{job}/steps/run/logs"
        for _ in range(count):
            response = client.post(path, content=payload)
            assert response.status_code == 201, response.text


def report(label: str, chunks: int, size: int, seconds: float) -> None:
    rate = chunks / seconds
    print(
        f"  {label:<44} {rate:8.0f} chunks/s  {rate * size / MIB:7.2f} MiB/s"
        f"  ({chunks} x {size} B in {seconds:.1f} s)"
    )


def bench_appends(server: Server, url: str, chunks: int) -> None:
    print("append throughput, 4 KiB chunks (PostgreSQL):")
    text = chunk_of(4096)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=30) as client:
        task_id = running_task(client, 8)
    started = time.perf_counter()
    append_over_http(server.base, task_id, "j0", text, chunks)
    report("HTTP, 1 client, one step", chunks, 4096, time.perf_counter() - started)
    per_client = chunks // 8
    threads = [
        threading.Thread(
            target=append_over_http, args=(server.base, task_id, f"j{n}", text, per_client)
        )
        for n in range(8)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report("HTTP, 8 clients, a step each", per_client * 8, 4096, time.perf_counter() - started)
    started = time.perf_counter()
    append_over_http(server.base, task_id, "j1", chunk_of(64 * 1024), chunks // 6)
    report("(for contrast) HTTP, 1 client, 64 KiB chunks", chunks // 6, 64 * 1024,
           time.perf_counter() - started)  # fmt: skip
    with StepLogs(StoreConfig.from_url(url).env("logs"), max_bytes_per_step=2**40) as logs:
        target = LoggedStep(uuid4(), "j0", "run", "in_progress", True)
        started = time.perf_counter()
        for _ in range(chunks):
            logs.append(target, text)
        report("application alone (no HTTP), one step", chunks, 4096, time.perf_counter() - started)


def fill_through_domain(url: str, task_id: str, job: str, size: int, total: int) -> None:
    """Writes `total` bytes of `size`-byte chunks in big transactions (the rules still apply)."""
    text = chunk_of(size)
    with StepLogs(StoreConfig.from_url(url).env("logs"), max_bytes_per_step=2**40) as logs:
        target = LoggedStep(UUID(task_id), job, "run", "in_progress", True)
        remaining = total // size
        while remaining:
            batch = min(remaining, 2000)
            log = StepLog.following(target, logs._last_event(target.stream_id))
            for _ in range(batch):
                log.append(text, cap_bytes=logs.max_bytes_per_step, now=logs.clock())
            logs.save(*log.collect_events())
            remaining -= batch


def download(server: Server, task_id: str, job: str, label: str) -> None:
    pid = server.process.pid
    before = rss_kib(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    received = 0
    started = time.perf_counter()
    url = f"{server.base}/v1/tasks/{task_id}/jobs/{job}/steps/run/logs?format=text"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.stream("GET", url, headers=headers, timeout=120) as response:
        assert response.status_code == 200, response.read()
        expected = int(response.headers["content-length"])
        for part in response.iter_raw(256 * 1024):
            received += len(part)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    assert received == expected, (received, expected)
    mib = received / MIB
    print(
        f"  {label:<34} {mib:6.0f} MiB in {seconds:5.1f} s ({mib / seconds:5.0f} MiB/s);"
        f" server RSS {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB during"
        f" (+{(peak - before) / 1024:.0f} MiB)"
    )


def bench_download(server: Server, url: str, mib: int) -> None:
    print("download with ?format=text, each by a fresh server process (its memory):")
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=30) as client:
        task_id = running_task(client, 3)
    append_over_http(server.base, task_id, "j0", chunk_of(MIB), mib)
    fill_through_domain(url, task_id, "j1", 4096, mib * MIB)
    fill_through_domain(url, task_id, "j2", MIB, mib * MIB // 4)
    server.stop()
    for job, label in (
        ("j0", f"{mib} MiB log, 1 MiB chunks"),
        ("j2", f"{mib // 4} MiB log, 1 MiB chunks"),
        ("j1", f"{mib} MiB log, 4 KiB chunks"),
    ):
        fresh = Server(url, server.var_dir)
        try:
            download(fresh, task_id, job, label)
        finally:
            fresh.stop()


def bench_logs(chunks: int, download_mib: int, workers: int = 1) -> None:
    with fresh_database("postgres") as db:
        server = Server(db.url, db.workdir, workers)
        try:
            bench_appends(server, db.url, chunks)
            bench_download(server, db.url, download_mib)
        finally:
            server.stop()
