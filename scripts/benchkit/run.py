"""One database's run: set up, load, rebuild, measure every figure, tear down."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchkit import lists
from benchkit.databases import Database, fresh_database
from benchkit.dataset import (
    ORG,
    TRANSITIONS_PER_INGEST_TASK,
    Dataset,
    Loader,
    ingest_transitions,
)
from benchkit.figures import NOT_AVAILABLE, Figure
from benchkit.progress import Progress, say
from benchkit.scale import CLIENTS, Scale
from benchkit.servers import SCRIPTS, Process, baseline_server, tasktrail_server
from domain.application import TaskLedger
from projections.runtime import CATALOGUE, Projections, RunnerActiveError

BATCH_TASKS, BATCH_STEPS = 10, 10  # a batch request: 10 tasks x 10 transitions
RAW_PAGE = 2000
SMALL_TASK_EVENTS = 200  # the task size issue 3 asks p50/p99 of GET /v1/tasks/{id} for


@dataclass
class Outcome:
    figures: list[Figure] = field(default_factory=list)
    plans: list[dict[str, Any]] = field(default_factory=list)
    baselines: dict[str, float] = field(default_factory=dict)
    loaded: dict[str, Any] = field(default_factory=dict)


def load(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Runs the load generator in its own process and returns its result."""
    path = workdir / f"load-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(spec))
    output = subprocess.run(
        [sys.executable, "-m", "benchkit.loadgen", str(path)],
        cwd=str(SCRIPTS),
        capture_output=True,
        text=True,
        timeout=600,
    )
    path.unlink()
    if output.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{output.stderr[-3000:]}")
    return dict(json.loads(output.stdout))


def timed(server: Process, scale: Scale, token: str, **spec: Any) -> dict[str, Any]:
    return load(
        {
            "mode": "timed",
            "host": "127.0.0.1",
            "port": server.port,
            "clients": CLIENTS,
            "seconds": scale.seconds,
            "warmup": scale.warmup,
            "headers": {"Authorization": f"Bearer {token}"},
            **spec,
        },
        server_workdir(server),
    )


def server_workdir(server: Process) -> Path:
    return server.log_path.parent


def error_notes(result: dict[str, Any]) -> list[str]:
    notes = []
    if result.get("errors"):
        notes.append(f"{result['errors']} errors, e.g. {result['sample_error'][:120]!r}")
    if result.get("exhausted_clients"):
        notes.append(f"{result['exhausted_clients']} clients ran out of prepared work")
    return notes


def median(result: dict[str, Any]) -> str:
    """The p50 beside a p99: on a busy machine one stall makes the p99 of 30 samples."""
    return f"p50 {result['p50_ms']:.1f} ms"


# ------------------------------------------------------------------ set-up


def load_data(scale: Scale, ledger: TaskLedger) -> Dataset:
    loader = Loader(ledger)
    loader.feed(scale.tasks, scale.reruns)
    data = loader.data
    say(
        f"  the task to read ({scale.read_task_events} events) and the long timeline "
        f"({scale.timeline_task_events} events)..."
    )
    data.read_task, data.read_task_version = loader.long_task(scale.read_task_events, "read me")
    data.small_task, _ = loader.long_task(SMALL_TASK_EVENTS, "read me too")
    data.timeline_task, data.timeline_task_version = loader.long_task(
        scale.timeline_task_events, "long timeline"
    )
    single = scale.tasks_per_client(scale.single_rate_ceiling, TRANSITIONS_PER_INGEST_TASK)
    batch = scale.tasks_per_client(
        scale.batch_rate_ceiling, TRANSITIONS_PER_INGEST_TASK, BATCH_TASKS
    )
    data.single_tasks = loader.ingest_tasks(CLIENTS, single, "tasks for 1-transition POSTs")
    data.batch_tasks = loader.ingest_tasks(CLIENTS, batch, "tasks for batch POSTs")
    loader.snapshot_heads()
    return data


def raw_read_rate(ledger: TaskLedger, head: int) -> float:
    """Baseline (d): the notification log read raw, in pages, nothing decoded."""
    bar = Progress("raw notification read", head, "events")
    started, position = time.perf_counter(), 0
    while True:
        page = ledger.recorder.select_notifications(
            start=position, limit=RAW_PAGE, inclusive_of_start=False
        )
        if page:
            position = page[-1].id
            bar.advance(len(page))
        if len(page) < RAW_PAGE:
            break
    seconds = time.perf_counter() - started
    bar.close()
    return bar.done / seconds


def rebuild_all(db: Database, ledger: TaskLedger, out: Outcome, raw: float) -> None:
    projections = Projections(db.store, ledger)
    try:
        head = ledger.recorder.max_notification_id() or 0
        for name in CATALOGUE:
            bar = Progress(f"rebuild {name}", head, "positions")

            def on_batch(position: int, notifications: int, bar: Progress = bar) -> None:
                bar.advance(position - bar.done)

            result = rebuild_one(projections, name, on_batch)
            bar.close()
            out.figures.append(
                Figure(
                    f"rebuild.{name}",
                    f"projection rebuild: {name}",
                    "events/s",
                    result.rate,
                    raw,
                    "raw notification read",
                    "ratio",
                    0.5,
                )
            )
    finally:
        projections.close()


def rebuild_one(projections: Projections, name: str, on_batch: Any) -> Any:
    """Rebuilds one projection. Nothing else runs on this fresh database, so a refusal
    means the election could not reach PostgreSQL (a busy server): try again."""
    for attempt in range(10):
        try:
            return projections.rebuild(name, on_batch=on_batch)
        except RunnerActiveError:
            if attempt == 9:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def executemany_rate(db: Database, scale: Scale) -> float:
    """Baseline (b): rows/s inserting 100 event-like rows per transaction, one connection."""
    state = b'{"status": "done", "job": "j1", "step": "s1", "at": "2026-11-28T12:00:00Z"}' * 3
    rows_done = 0

    def batches() -> Any:
        task = uuid.uuid4()
        for version in range(1, 10**9, 100):
            yield [
                (str(task), v, "domain.task:Task.StepFinished", state)
                for v in range(version, version + 100)
            ]

    ddl = (
        "CREATE TABLE baseline_rows (originator_id {uuid} NOT NULL, originator_version "
        "INTEGER NOT NULL, topic TEXT NOT NULL, state {blob} NOT NULL, "
        "PRIMARY KEY (originator_id, originator_version))"
    )
    if db.kind == "postgres":
        pg = psycopg.connect(db.store.conninfo())
        pg.execute(ddl.format(uuid="uuid", blob="bytea"))
        pg.commit()

        def insert(rows: list[Any]) -> None:
            with pg.cursor() as cursor:
                cursor.executemany("INSERT INTO baseline_rows VALUES (%s, %s, %s, %s)", rows)
            pg.commit()

        close = pg.close
    else:
        lite = sqlite3.connect(db.workdir / "baseline.sqlite")
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute(ddl.format(uuid="TEXT", blob="BLOB"))

        def insert(rows: list[Any]) -> None:
            lite.executemany("INSERT INTO baseline_rows VALUES (?, ?, ?, ?)", rows)
            lite.commit()

        close = lite.close
    try:
        started = time.perf_counter()
        deadline = started + scale.seconds
        for rows in batches():
            insert(rows)
            rows_done += len(rows)
            if time.perf_counter() > deadline:
                break
    finally:
        close()
    return rows_done / (time.perf_counter() - started)


# ------------------------------------------------------------------ requests


def single_requests(data: Dataset) -> list[list[Any]]:
    """Per client: one transition a request, walking its own tasks step by step."""
    scripts = []
    for tasks in data.single_tasks:
        mine = []
        for task_id in tasks:
            for transition in ingest_transitions():
                body = json.dumps({"transitions": [transition]})
                mine.append(["POST", f"/v1/tasks/{task_id}/transitions", body])
        scripts.append(mine)
    return scripts


def batch_requests(data: Dataset) -> list[list[Any]]:
    """Per client: 100 transitions a request, 10 of each of 10 of its tasks."""
    all_transitions = list(ingest_transitions())
    scripts = []
    for tasks in data.batch_tasks:
        mine = []
        for start in range(0, len(tasks), BATCH_TASKS):
            group = tasks[start : start + BATCH_TASKS]
            for at in range(0, len(all_transitions), BATCH_STEPS):
                items = [
                    {"task_id": t, "transitions": all_transitions[at : at + BATCH_STEPS]}
                    for t in group
                ]
                mine.append(["POST", "/v1/transitions", json.dumps({"items": items})])
        scripts.append(mine)
    return scripts


def api_key(server: Process) -> str:
    status, body = server.request(
        "POST", "/v1/api-keys", {"org": ORG, "role": "writer", "name": "bench"}
    )
    if status != 201:
        raise RuntimeError(f"could not create an API key: {status} {body}")
    return str(body["token"])


def follow_cursor(
    server: Process, token: str, query: lists.ListQuery, scale: Scale
) -> tuple[int, str | None]:
    """The cursor of the deep page (following next_cursor), or of the last page there is."""
    cursor, page = None, 1
    while page < scale.deep_page:
        status, body = server.request("GET", query.path(scale.page_size, cursor), token=token)
        if status != 200:
            raise RuntimeError(f"list {query.name} failed: {status} {body}")
        if body["next_cursor"] is None:
            break
        cursor, page = body["next_cursor"], page + 1
    return page, cursor


def measure_reads(
    server: Process, db: Database, scale: Scale, data: Dataset, token: str, out: Outcome
) -> None:
    say("  reads: GET /healthz and GET /v1/tasks/{id}, 16 clients...")
    health = timed(server, scale, token, repeat=["GET", "/healthz", None])
    out.baselines["healthz_rps"] = health["rps"]
    task_path = f"/v1/tasks/{data.read_task}"
    reads = timed(server, scale, token, repeat=["GET", task_path, None])
    events = data.read_task_version
    out.figures.append(
        Figure(
            "read.task.rps",
            f"GET /v1/tasks/{{id}}, {events} events, 16 clients",
            "req/s",
            reads["rps"],
            health["rps"],
            "GET /healthz",
            "ratio",
            0.3,
            error_notes(reads),
            {"load": reads, "baseline_load": health},
        )
    )
    out.figures.append(
        Figure(
            "read.task.p99",
            f"GET /v1/tasks/{{id}}, {events} events, p99 at 16 clients",
            "ms",
            reads["p99_ms"],
            rule="max",
            goal=15.0,
            notes=[median(reads)],
        )
    )

    say("  latency, one client: the task, its timeline, each list query at two pages...")
    queries = lists.catalogue(data)
    groups = [
        {"name": "task", "request": ["GET", task_path, None], "count": scale.samples},
        {
            "name": "small_task",
            "request": ["GET", f"/v1/tasks/{data.small_task}", None],
            "count": scale.samples,
        },
        {
            "name": "timeline",
            "request": ["GET", f"/v1/tasks/{data.timeline_task}/timeline", None],
            "count": scale.samples,
        },
    ]
    pages: dict[str, tuple[int, str | None]] = {}
    bar = Progress("following next_cursor", len(queries), "queries")
    for query in queries:
        pages[query.name] = follow_cursor(server, token, query, scale)
        bar.advance()
        for which, cursor in (("page_1", None), ("page_deep", pages[query.name][1])):
            groups.append(
                {
                    "name": f"{query.name}.{which}",
                    "request": ["GET", query.path(scale.page_size, cursor), None],
                    "count": scale.samples,
                }
            )
    bar.close()
    latency = load(
        {
            "mode": "sequence",
            "host": "127.0.0.1",
            "port": server.port,
            "groups": groups,
            "headers": {"Authorization": f"Bearer {token}"},
        },
        db.workdir,
    )
    one = latency["task"]
    out.figures.append(
        Figure(
            "read.task.p99_1client",
            f"GET /v1/tasks/{{id}}, {events} events, p99 at 1 client",
            "ms",
            one["p99_ms"],
            rule="max",
            goal=15.0,
            notes=[median(one), *error_notes(one)],
        )
    )
    small = latency["small_task"]
    out.figures.append(
        Figure(
            "read.task_small.p99_1client",
            f"GET /v1/tasks/{{id}}, {SMALL_TASK_EVENTS} events, p99 at 1 client",
            "ms",
            small["p99_ms"],
            rule="max",
            goal=15.0,
            notes=[median(small), *error_notes(small)],
        )
    )
    timeline = latency["timeline"]
    out.figures.append(
        Figure(
            "timeline.p99",
            f"timeline first page, {data.timeline_task_version}-event task, p99 at 1 client",
            "ms",
            timeline["p99_ms"],
            rule="max",
            goal=20.0,
            notes=[median(timeline), *error_notes(timeline)],
        )
    )

    reader = TaskLedger(db.store.env("tasks"))
    projections = Projections(db.store, reader)
    conn: Any = (
        psycopg.connect(db.store.conninfo(), autocommit=True)
        if db.kind == "postgres"
        else sqlite3.connect(str(db.store.sqlite_path))
    )
    try:
        view = projections.task_list
        for query in queries:
            deep, cursor = pages[query.name]
            for which, page, page_cursor in (("page_1", 1, None), ("page_deep", deep, cursor)):
                result = latency[f"{query.name}.{which}"]
                plan = lists.explain(
                    db.kind, view, conn, query.task_query(scale.page_size, page_cursor)
                )
                out.plans.append({"query": query.name, "page": page, **plan})
                notes = [median(result), *error_notes(result)]
                if which == "page_deep" and deep < scale.deep_page:
                    notes.append(f"only {deep} pages")
                if plan["full_scan"]:
                    notes.append("Seq Scan")
                out.figures.append(
                    Figure(
                        f"list.{query.name}.{which}",
                        f"GET /v1/tasks {query.name}, page {page}, p99 at 1 client",
                        "ms",
                        result["p99_ms"],
                        rule="max",
                        goal=20.0,
                        notes=notes,
                        extra={"plan": plan["top"], "p50_ms": result["p50_ms"]},
                    )
                )
    finally:
        conn.close()
        projections.close()
        reader.close()


def measure_ingest(
    server: Process, scale: Scale, data: Dataset, token: str, out: Outcome
) -> list[list[Any]]:
    say("  ingest: POST /v1/tasks/{id}/transitions, 1 transition a request, 16 clients...")
    before = server.rss_mib()
    server.start_sampling()
    single_scripts = single_requests(data)
    single = timed(server, scale, token, requests=single_scripts)
    out.figures.append(
        Figure(
            "ingest.single",
            "POST /v1/tasks/{id}/transitions, 1 transition a request",
            "req/s",
            single["rps"],
            None,
            "FastAPI + 1 INSERT",
            "ratio",
            1.0,
            error_notes(single),
            {"load": single},
        )
    )
    say("  ingest: POST /v1/transitions, 100 transitions a request, 16 clients...")
    status, _ = server.request("POST", "/v1/transitions", {"items": []}, token=token)
    batch_figure = Figure(
        "ingest.batch",
        "POST /v1/transitions, 100 transitions a request",
        "transitions/s",
        NOT_AVAILABLE,
        None,
        "executemany, 100 rows/transaction",
        "ratio",
        0.5,
    )
    if status in (404, 405):
        batch_figure.notes.append(f"the route answered {status}")
    else:
        batch = timed(server, scale, token, requests=batch_requests(data), count_items=True)
        items = batch["item_statuses"]
        stored = sum(n for s, n in items.items() if s.isdigit() and int(s) < 300)
        batch_figure.value = stored * BATCH_STEPS / batch["seconds"]
        batch_figure.notes += error_notes(batch)
        refused = {s: n for s, n in items.items() if not (s.isdigit() and int(s) < 300)}
        if refused:
            batch_figure.notes.append(f"items refused: {refused}")
        batch_figure.extra = {"load": batch}
    out.figures.append(batch_figure)
    peak = server.stop_sampling()
    out.figures.append(
        Figure(
            "memory.rss_peak",
            "server RSS, peak under the ingest loads",
            "MB",
            peak,
            rule="max",
            goal=200.0,
            notes=[f"{before:.0f} MB before them"],
        )
    )
    return single_scripts


def measure_baseline_ingest(
    server: Process, scale: Scale, scripts: list[list[Any]], out: Outcome
) -> None:
    say("  baseline (a): FastAPI + one INSERT per POST, 16 clients...")
    server.wait_until_up()
    result = timed(server, scale, "none", requests=scripts)
    out.baselines["fastapi_insert_rps"] = result["rps"]
    for figure in out.figures:
        if figure.key == "ingest.single":
            figure.baseline = result["rps"]
            figure.extra["baseline_load"] = result


# ------------------------------------------------------------------ one database


def bench(kind: str, scale: Scale) -> Outcome:
    out = Outcome()
    say(f"[{kind}] fresh database...")
    with fresh_database(kind) as db:
        baseline = baseline_server(db.baseline_env(), db.workdir)
        try:
            measure_all(db, scale, baseline, out)
        finally:
            baseline.stop()
    return out


def measure_all(db: Database, scale: Scale, baseline: Process, out: Outcome) -> None:
    say("  loading the data through the library...")
    ledger = TaskLedger(db.store.env("tasks"))
    try:
        data = load_data(scale, ledger)
        head = ledger.recorder.max_notification_id() or 0
        out.loaded = {
            "tasks": data.tasks,
            "events": head,
            "read_task_events": data.read_task_version,
            "timeline_task_events": data.timeline_task_version,
        }
        raw = raw_read_rate(ledger, head)
        out.baselines["raw_read_events_per_s"] = raw
        rebuild_all(db, ledger, out, raw)
    finally:
        ledger.close()
    db.analyze()
    say("  baseline (b): executemany, 100 rows a transaction...")
    out.baselines["executemany_rows_per_s"] = executemany_rate(db, scale)
    server = tasktrail_server(db.url, db.workdir)
    try:
        token = api_key(server)
        measure_reads(server, db, scale, data, token, out)
        scripts = measure_ingest(server, scale, data, token, out)
    finally:
        server.stop()
    measure_baseline_ingest(baseline, scale, scripts, out)
    for figure in out.figures:
        if figure.key == "ingest.batch":
            figure.baseline = out.baselines["executemany_rows_per_s"]
