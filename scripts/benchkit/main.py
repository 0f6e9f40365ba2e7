"""`scripts/bench`: every performance figure beside its baseline and target, in one run.

    scripts/bench [--quick | --smoke] [--json PATH] [--database postgres|sqlite|both]
    scripts/bench --profile DIR       pyinstrument profiles of the hot paths instead
    scripts/bench --logs [--quick]    step-log throughput and download memory instead

For each database (a fresh PostgreSQL database on 127.0.0.1:5432, user postgres, and a
temporary SQLite file; both removed afterwards) it loads a feed of tasks through the
library, measures the raw notification read and each projection's rebuild, starts a
real `tasktrail serve` (uvicorn, 1 worker, projection runners in process), and drives
it from a separate load-generator process on loopback: 16 concurrent keep-alive
clients, bounded in time. The baselines are measured in the same run. Progress goes
to stderr; the Markdown tables to stdout. Benchmarks are not tests: nothing here
asserts a timing, and the figures are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit.figures import Figure, markdown, plans_markdown
from benchkit.progress import say
from benchkit.run import Outcome, bench
from benchkit.scale import CLIENTS, FULL, QUICK, SMOKE, Scale

ORDER = ("ingest.single", "ingest.batch", "read.task", "list.", "timeline", "rebuild", "memory")


def ordered(figures: list[Figure]) -> list[Figure]:
    def rank(figure: Figure) -> int:
        return next(i for i, prefix in enumerate(ORDER) if figure.key.startswith(prefix))

    return sorted(figures, key=rank)


def header(scale: Scale, outcomes: dict[str, Outcome]) -> str:
    loaded = "; ".join(
        f"{kind}: {o.loaded['tasks']:,} tasks / {o.loaded['events']:,} events"
        for kind, o in outcomes.items()
    )
    scaled = (
        "full size"
        if scale is FULL
        else f"**{scale.name}: scaled down** (the targets are set for 100,000 tasks / "
        "1,000,000 events, 10 s per load figure, 50 a page)"
    )
    return (
        f"`scripts/bench{'' if scale is FULL else ' --' + scale.name}`, {scaled}. "
        f"Data: {loaded}. Throughput: {CLIENTS} concurrent keep-alive clients from a "
        f"separate process, {scale.seconds:g} s each after {scale.warmup:g} s of warm-up; "
        f'latency figures "at 1 client": {scale.samples} sequential requests each. '
        f"List pages: {scale.page_size} a page, the deep page reached by following "
        f"`next_cursor`. Server: `tasktrail serve`, 1 worker, projection runners on, "
        f"log level warning, rate limits off. {platform.node()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; a shared 2-core machine: figures are noisy."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down data, about 2 minutes")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny, proves it works (wins over --quick)"
    )
    parser.add_argument("--json", type=Path, help="also write every figure as JSON here")
    parser.add_argument("--database", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="instead of the figures: pyinstrument profiles of the server's hot paths "
        "(PostgreSQL) into DIR",
    )
    parser.add_argument(
        "--logs",
        action="store_true",
        help="instead of the figures: step-log append and download rates (PostgreSQL)",
    )
    parser.add_argument(
        "--timeouts",
        action="store_true",
        help="instead of the figures: hard-timeout latency and background take-over "
        "(two servers, PostgreSQL)",
    )
    args = parser.parse_args(argv)
    if args.timeouts:
        from benchkit.timeouts import bench_timeouts

        tasks, rounds = (10, 1) if args.smoke else (100, 3) if args.quick else (100, 5)
        bench_timeouts(tasks, rounds)
        return 0
    if args.logs:
        from benchkit.logs import bench_logs

        chunks, mib = (100, 4) if args.smoke else (1000, 50) if args.quick else (3000, 200)
        bench_logs(chunks, mib)
        return 0
    if args.profile:
        from benchkit.profile import profile

        return profile(args.profile)
    # --smoke wins over --quick (CI passes both).
    scale = SMOKE if args.smoke else QUICK if args.quick else FULL
    kinds = ["postgres", "sqlite"] if args.database == "both" else [args.database]
    started = time.perf_counter()
    outcomes = {kind: bench(kind, scale) for kind in kinds}
    print(header(scale, outcomes) + "\n")
    for kind, outcome in outcomes.items():
        print(markdown(kind, ordered(outcome.figures)) + "\n")
        baselines = ", ".join(f"{k} {v:,.0f}" for k, v in outcome.baselines.items())
        print(f"{kind} baselines: {baselines}\n")
        print(plans_markdown(kind, outcome.plans) + "\n")
    say(f"done in {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report(scale, outcomes), indent=2, default=str))
    return 0


def report(scale: Scale, outcomes: dict[str, Outcome]) -> dict[str, Any]:
    return {
        "scale": scale.name,
        "clients": CLIENTS,
        "seconds_per_figure": scale.seconds,
        "page_size": scale.page_size,
        "deep_page": scale.deep_page,
        "databases": {
            kind: {
                "loaded": o.loaded,
                "baselines": o.baselines,
                "figures": {f.key: f.as_json() for f in ordered(o.figures)},
                "plans": o.plans,
            }
            for kind, o in outcomes.items()
        },
    }


if __name__ == "__main__":
    sys.exit(main())
