"""`scripts/bench --profile DIR`: pyinstrument profiles of the server's hot paths.

On a fresh PostgreSQL database with a small feed and the same long tasks as the
quick run, it profiles the rebuild of every projection (in this process), then
starts `benchkit.profiled_serve` once per path and drives it with the load
generator (16 clients, 5 s): the 1-transition ingest POST, the 100-transition
batch POST, `GET /v1/tasks/{id}` of the 500-event task, the first timeline page
of the 5,000-event task, and a page of 50 of `GET /v1/tasks?project=`. Each
profile goes to DIR/<path>.txt and .html; the head of each is printed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyinstrument import Profiler

from benchkit.databases import fresh_database
from benchkit.progress import say
from benchkit.run import (
    Outcome,
    api_key,
    batch_requests,
    load_data,
    rebuild_all,
    single_requests,
    timed,
)
from benchkit.scale import QUICK
from benchkit.servers import ROOT, SCRIPTS, Process, tasktrail_env
from domain.application import TaskLedger

SCALE = replace(QUICK, tasks=500, seconds=5.0, warmup=0.5, batch_rate_ceiling=0)


def write_profile(profiler: Profiler, out: Path, title: str) -> None:
    out.with_suffix(".txt").write_text(profiler.output_text(unicode=True))
    out.with_suffix(".html").write_text(profiler.output_html())
    show(out.with_suffix(".txt"), title)


def show(path: Path, title: str) -> None:
    lines = path.read_text().splitlines()[:60]
    print(f"## {title}\n\n```\n" + "\n".join(lines) + "\n```\n", flush=True)


def profile(out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    with fresh_database("postgres") as db:
        ledger = TaskLedger(db.store.env("tasks"))
        try:
            data = load_data(SCALE, ledger)
            # The rebuild runs in this process: profiled here, in the main thread.
            profiler = Profiler(interval=0.0005)
            profiler.start()
            rebuild_all(db, ledger, Outcome(), raw=1.0)
            profiler.stop()
            write_profile(profiler, out_dir / "rebuild", "rebuild of every projection")
        finally:
            ledger.close()
        db.analyze()
        paths: dict[str, dict[str, Any]] = {
            "ingest": {"requests": single_requests(data)},
            "batch": {"requests": batch_requests(data)},
            "get_task": {"repeat": ["GET", f"/v1/tasks/{data.read_task}", None]},
            "timeline": {"repeat": ["GET", f"/v1/tasks/{data.timeline_task}/timeline", None]},
            "list": {"repeat": ["GET", "/v1/tasks?project=shop&limit=50", None]},
        }
        for name, spec in paths.items():
            say(f"  profiling {name}...")
            env = {
                **tasktrail_env(db.url, db.workdir),
                "BENCH_PROFILE_OUT": str(out_dir.resolve() / name),
                "PYTHONPATH": f"{SCRIPTS}{os.pathsep}{ROOT}",
            }
            command = [sys.executable, "-m", "benchkit.profiled_serve", "serve", "--workers", "1"]
            server = Process(f"profiled-{name}", command, env, db.workdir)
            try:
                result = timed(server, SCALE, api_key(server), **spec)
            finally:
                server.stop()
            show(
                out_dir / f"{name}.txt",
                f"{name}: {result['requests']} requests "
                f"({result['errors']} errors), served one at a time under the profiler",
            )
    return 0
