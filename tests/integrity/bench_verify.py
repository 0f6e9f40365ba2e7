"""How fast `verify` checks stored events: `python -m tests.integrity.bench_verify URL [N]`.

Writes about N task events (default 100,000: tasks of ~100 events, saved 20 tasks
per transaction straight through the ledger), then verifies the whole store and
one org, and prints events per second. Not a test: it takes a minute on PostgreSQL.

    .venv/bin/python -m tests.integrity.bench_verify sqlite:////tmp/bench.sqlite
    .venv/bin/python -m tests.integrity.bench_verify "postgresql://postgres@127.0.0.1:5432/test?schema=bench"
"""

from __future__ import annotations

import sys
import time
from uuid import uuid4

from domain.application import TaskLedger
from domain.context import acting_as
from domain.task import Task
from integrity.verify import verify_store
from store.config import StoreConfig
from tests.domain.builders import EXECUTOR, USER, executable, job, run_steps

STEPS = 47  # created, queued, job queued and started, 47 steps run, job and task finished
TASKS_PER_SAVE = 20


def a_finished_task(org: str) -> Task:
    with acting_as(USER):
        task = executable(job("build", *(f"s{i}" for i in range(STEPS))), task_id=uuid4(), org=org)
    with acting_as(EXECUTOR):
        run_steps(task, "build", *(f"s{i}" for i in range(STEPS)))
    return task


def main(url: str, events_wanted: int) -> None:
    ledger = TaskLedger(StoreConfig.from_url(url).env("tasks"))
    try:
        started = time.monotonic()
        written = 0
        while written < events_wanted:
            tasks = [a_finished_task("acme" if i % 2 else "globex") for i in range(TASKS_PER_SAVE)]
            written += sum(len(t.pending_events) for t in tasks)
            ledger.save(*tasks)
        print(f"wrote {written} events in {time.monotonic() - started:.1f} s")
        for scope in ({}, {"org": "acme"}):  # the whole store, then one org
            started, cpu = time.monotonic(), time.process_time()
            report = verify_store(ledger, org=scope.get("org"))
            seconds, cpu = time.monotonic() - started, time.process_time() - cpu
            assert report.ok, report.problems[:5]
            print(
                f"verify {scope or 'whole store'}: {report.events_checked} events of "
                f"{report.tasks_checked} tasks in {seconds:.1f} s, {cpu:.1f} s of CPU "
                f"({report.events_checked / seconds:,.0f} events/s)"
            )
    finally:
        ledger.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
