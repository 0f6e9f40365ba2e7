"""Benchmarks the read models on PostgreSQL: rebuild rate and list query latency.

    .venv/bin/python scripts/bench_lists.py [--tasks 100000] [--url postgresql://...]

1. Loads `--tasks` tasks into a fresh schema as real events, through the domain
   (`Task.create` and `Task.report`, saved by the application 500 tasks per
   transaction): one org, 30 days of history, projects, types, authors, labels,
   origins, silent tasks and every outcome.
2. Reads the whole notification log raw (`select_notifications`, no decoding): the
   ceiling for any projection.
3. Rebuilds each projection from position 0 (`Projections.rebuild`: decode, apply
   in batches, one tracking record per batch) and reports events/s next to the raw
   rate. For contrast, applies the first events one per transaction, the way the
   library's `ProjectionRunner` does.
4. Times list queries (`TaskListView.list_tasks`, the code behind `GET /v1/tasks`)
   for three filter combinations and the unfiltered feed, first pages and deeper
   pages (via cursors): p50 and p99 in milliseconds, with each query's plan.
5. Times write-to-visible: a task saved while the runners run, until the task list
   has processed its position.

The schema is dropped at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
from eventsourcing.persistence import Tracking
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain.application import TaskLedger
from domain.plan import JobPlan, StepPlan
from domain.status import Status
from domain.task import Task
from domain.work import Transition
from projections.runtime import Projections
from projections.task_list import Cursor, TaskQuery
from store.config import StoreConfig

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PLAN = (
    JobPlan("build", "Build", (StepPlan("compile", "Compile"),)),
    JobPlan("deploy", "Deploy", (StepPlan("rollout", "Roll out"),), needs=("build",)),
)
S = Status
OUTCOMES: list[tuple[float, list[Transition]]] = [
    (0.10, []),
    (0.10, [Transition(S.QUEUED)]),
    (0.10, [Transition(S.IN_PROGRESS, "build", "compile")]),
    (
        0.45,
        [
            Transition(S.IN_PROGRESS, "build", "compile"),
            Transition(S.DONE, "build", "compile"),
            Transition(S.IN_PROGRESS, "deploy", "rollout"),
            Transition(S.DONE, "deploy", "rollout"),
        ],
    ),
    (
        0.20,
        [
            Transition(S.IN_PROGRESS, "build", "compile"),
            Transition(S.FAILED, "build", "compile", error={"message": "exit 2"}),
        ],
    ),
    (0.05, [Transition(S.CANCELED, "build")]),
]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def load(ledger: TaskLedger, tasks: int, rng: random.Random) -> int:
    """Saves `tasks` tasks with their histories; returns the number of events."""
    projects = [f"project-{n}" for n in range(20)] + [None]
    types = ["app.deploy", "app.build", "project.member.add", "db.backup", "dns.update"]
    authors = [{"id": f"u-{n}", "name": f"User {n}", "kind": "user"} for n in range(150)]
    authors += [{"id": f"bot-{n}", "name": f"Bot {n}", "kind": "system"} for n in range(10)]
    authors += [{"id": f"s-{n}", "name": f"Support {n}", "kind": "support"} for n in range(20)]
    weights = [w for w, _ in OUTCOMES]
    ids: list[Any] = []
    events = 0
    started = time.perf_counter()
    chunk: list[Task] = []
    for n in range(tasks):
        created = NOW - timedelta(seconds=rng.uniform(0, 30 * 86400))
        immediate = rng.random() < 0.2
        task = Task.create(
            task_id=uuid4(),
            org="acme",
            type=rng.choice(types),
            title=f"Task {n}",
            kind="immediate" if immediate else "executable",
            author=rng.choice(authors),
            now=created,
            project=rng.choice(projects),
            origin_task_id=rng.choice(ids) if ids and rng.random() < 0.2 else None,
            silent=rng.random() < 0.1,
            labels={"app": f"app-{rng.randrange(50)}", "env": rng.choice(("prod", "dev", "qa"))},
            jobs=() if immediate else PLAN,
        )
        if not immediate:
            [outcome] = rng.choices([t for _, t in OUTCOMES], weights)
            if outcome:
                task.report(outcome, created + timedelta(seconds=rng.uniform(1, 600)))
        ids.append(task.id)
        chunk.append(task)
        events += task.version
        if len(chunk) == 500:
            ledger.save(*chunk)
            chunk = []
            print(f"\r  loaded {n + 1:,} tasks, {events:,} events", end="", file=sys.stderr)
    if chunk:
        ledger.save(*chunk)
    print(
        f"\r  loaded {tasks:,} tasks, {events:,} events in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return events


def raw_read_rate(ledger: TaskLedger, batch: int = 2000) -> tuple[int, float]:
    started, position, count = time.perf_counter(), 0, 0
    while True:
        page = ledger.recorder.select_notifications(
            start=position, limit=batch, inclusive_of_start=False
        )
        count += len(page)
        if len(page) < batch:
            return count, count / (time.perf_counter() - started)
        position = page[-1].id


def decoded_read_rate(ledger: TaskLedger, batch: int = 2000) -> float:
    """Reading and decoding every event: what any projection must do at least."""
    started, position, count = time.perf_counter(), 0, 0
    mapper = ledger.mapper
    while True:
        page = ledger.recorder.select_notifications(
            start=position, limit=batch, inclusive_of_start=False
        )
        for notification in page:
            mapper.to_domain_event(notification)
        count += len(page)
        if len(page) < batch:
            return count / (time.perf_counter() - started)
        position = page[-1].id


def one_per_transaction_rate(ledger: TaskLedger, projections: Projections, n: int) -> float:
    """The library's way: one transaction (and tracking record) per event."""
    projection = projections.projections["task_list"]
    projection.view.reset()
    notifications = ledger.recorder.select_notifications(start=0, limit=n)
    started = time.perf_counter()
    for notification in notifications:
        event = ledger.mapper.to_domain_event(notification)
        projection.process_event(event, Tracking(ledger.name, notification.id))
    return len(notifications) / (time.perf_counter() - started)


def time_queries(
    projections: Projections, query: TaskQuery, variants: list[dict[str, Any]], rounds: int
) -> tuple[list[float], list[float]]:
    """Latencies (ms) of first pages and of pages 2-5 reached by cursor."""
    view = projections.task_list
    first, deeper = [], []
    for n in range(rounds):
        q = replace(query, **variants[n % len(variants)])
        started = time.perf_counter()
        page = view.list_tasks(q)
        first.append((time.perf_counter() - started) * 1000)
        for _ in range(4):
            if page.next_cursor is None:
                break
            q = replace(q, after=Cursor.decode(page.next_cursor))
            started = time.perf_counter()
            page = view.list_tasks(q)
            deeper.append((time.perf_counter() - started) * 1000)
    return first, deeper


def explain(store: StoreConfig, projections: Projections, query: TaskQuery) -> str:
    """The plan PostgreSQL picks for one query (its top nodes)."""
    view: Any = projections.task_list
    captured: list[Any] = []
    original = view._select

    def capture(text: str, params: Any) -> list[Any]:
        captured.append((text, params))
        return []

    view._select = capture
    try:
        view.list_tasks(query)
    finally:
        view._select = original
    text, params = captured[0]
    with psycopg.connect(store.conninfo()) as conn:
        rows = conn.execute(
            sql.SQL("EXPLAIN ") + view.dialect.render(text), list(params)
        ).fetchall()
    nodes = [r[0].strip() for r in rows if "->" in r[0] or r is rows[0]]
    return " / ".join(n.split("  (")[0].lstrip("-> ") for n in nodes[:4])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    schema = f"bench_{uuid4().hex[:8]}"
    base = StoreConfig.from_url(args.url)
    with psycopg.connect(base.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in args.url else "?"
    store = StoreConfig.from_url(f"{args.url}{separator}schema={schema}")
    ledger = TaskLedger(store.env("tasks"))
    projections = Projections(store, ledger)
    rng = random.Random(42)
    try:
        print(f"PostgreSQL, schema {schema}")
        events = load(ledger, args.tasks, rng)
        # Raw read and rebuild, in the same run.
        count, raw = raw_read_rate(ledger)
        print(f"raw read of the notification log: {count:,} events at {raw:,.0f} events/s")
        decoded = decoded_read_rate(ledger)
        print(f"read and decode every event (no writes): {decoded:,.0f} events/s")
        for name in projections.projections:
            result = projections.rebuild(name)
            print(
                f"rebuild {name:<10}: {result.events:,} events in {result.seconds:.1f} s = "
                f"{result.rate:,.0f} events/s ({result.rate / raw:.0%} of the raw read rate, "
                f"{result.rate / decoded:.0%} of read-and-decode)"
            )
        single = one_per_transaction_rate(ledger, projections, 3000)
        print(f"one event per transaction (library ProjectionRunner style): {single:,.0f} events/s")
        projections.rebuild("task_list")
        with psycopg.connect(store.conninfo(), autocommit=True) as conn:
            for table in ("task_list",):
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))
        # List queries.
        week_ago = NOW - timedelta(days=7)
        queries: dict[str, tuple[TaskQuery, list[dict[str, Any]]]] = {
            "feed (no filter)": (TaskQuery(org="acme"), [{}]),
            "project + status x2": (
                TaskQuery(org="acme"),
                [
                    {"project": f"project-{p}", "statuses": ("failed", "in_progress")}
                    for p in range(20)
                ],
            ),
            "label x2 + created_after": (
                TaskQuery(org="acme", created_after=week_ago),
                [{"labels": (("app", f"app-{a}"), ("env", "prod"))} for a in range(50)],
            ),
            "type + author_kind + include_silent": (
                TaskQuery(org="acme", include_silent=True),
                [
                    {"type": t, "author_kind": k}
                    for t in ("app.deploy", "db.backup", "dns.update")
                    for k in ("system", "support")
                ],
            ),
        }
        print(f"list queries over {args.tasks:,} tasks, limit 50, {args.rounds} rounds each:")
        for name, (query, variants) in queries.items():
            first, deeper = time_queries(projections, query, variants, args.rounds)
            plan = explain(store, projections, replace(query, **variants[0]))
            print(
                f"  {name:<36} first page p50 {statistics.median(first):6.2f} ms "
                f"p99 {percentile(first, 0.99):6.2f} ms | pages 2-5 p50 "
                f"{statistics.median(deeper) if deeper else 0:6.2f} ms "
                f"p99 {percentile(deeper, 0.99) if deeper else 0:6.2f} ms\n"
                f"  {'':<36} plan: {plan}"
            )
        # Write → visible in the list.
        projections.start()
        for projection in projections.projections.values():
            projection.view.progress.wait_for(ledger.recorder.max_notification_id() or 0, 60)
        latencies, after_ack = [], []
        for n in range(200):
            started = time.perf_counter()
            written = ledger.create_task(
                org="acme",
                type="app.deploy",
                title=f"probe {n}",
                kind="immediate",
                author={"id": "u-1", "name": "U", "kind": "user"},
            )
            acknowledged = time.perf_counter()
            projections.task_list.progress.wait_for(written.position or 0, 5)
            latencies.append((time.perf_counter() - started) * 1000)
            after_ack.append((time.perf_counter() - acknowledged) * 1000)
        print(
            "write → visible in the task list (200 creates, runners in process): "
            f"from the command's start p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {percentile(latencies, 0.99):.1f} ms; after its acknowledgement "
            f"p50 {statistics.median(after_ack):.1f} ms, p99 {percentile(after_ack, 0.99):.1f} ms"
        )
        print(f"({events:,} events loaded)")
    finally:
        projections.close()
        ledger.close()
        if not args.keep:
            with psycopg.connect(base.conninfo(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
