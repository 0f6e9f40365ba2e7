"""`scripts/bench --quick --smoke` runs end to end and reports every figure.

A benchmark is not a test: nothing here looks at a timing. It proves the command
still works (databases set up and removed, data loaded, servers started, load
generated, the JSON written) and that no figure silently went missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from store.config import StoreConfig
from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]
FIGURES = [
    "ingest.single",
    "ingest.batch",
    "read.task.rps",
    "read.task.p99",
    "read.task.p99_1client",
    "read.task_small.p99_1client",
    "timeline.p99",
    "rebuild.task_list",
    "rebuild.event_feed",
    "rebuild.deadlines",
    "memory.rss_peak",
    *(
        f"list.{name}.{page}"
        for name in (
            "project",
            "status",
            "type",
            "kind",
            "author_id",
            "author_kind",
            "origin_task_id",
            "rerun_of",
            "label",
            "created_after",
            "created_before",
            "include_silent",
            "project+status",
            "label+created_after",
            "type+author_kind+include_silent",
        )
        for page in ("page_1", "page_deep")
    ),
]
BASELINES = [
    "raw_read_events_per_s",
    "executemany_rows_per_s",
    "healthz_rps",
    "fastapi_insert_rps",
]


def bench_databases() -> set[str]:
    with psycopg.connect(StoreConfig.from_url(POSTGRES_URL).conninfo(), autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    return {name for (name,) in rows if name.startswith("tasktrail_bench_")}


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_smoke_reports_every_figure_on_both_databases(pg_url: str, tmp_path: Path) -> None:
    parts = urlsplit(POSTGRES_URL)
    env = {**os.environ, "TASKTRAIL_BENCH_POSTGRES_URL": f"{parts.scheme}://{parts.netloc}"}
    before = bench_databases()
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--smoke", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    report = json.loads(out.read_text())
    assert set(report["databases"]) == {"postgres", "sqlite"}
    for kind, measured in report["databases"].items():
        figures = measured["figures"]
        missing = [key for key in FIGURES if key not in figures]
        assert not missing, f"{kind}: figures missing from the JSON: {missing}"
        for key in FIGURES:
            value = figures[key]["value"]
            assert value == "not available" or (isinstance(value, int | float) and value >= 0), (
                f"{kind} {key}: {value!r}"
            )
            assert figures[key]["target"], f"{kind} {key} has no target"
        for key in BASELINES:
            assert measured["baselines"][key] > 0, f"{kind}: baseline {key} is missing"
        # Every list query was explained, at both pages.
        assert len(measured["plans"]) == 30
    # The Markdown table is on stdout, one row per figure and database.
    assert result.stdout.count("| GET /v1/tasks ") >= 2 * 30
    # Its PostgreSQL database is gone again.
    assert bench_databases() <= before
