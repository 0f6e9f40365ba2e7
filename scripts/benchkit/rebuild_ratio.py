"""Each projection's rebuild rate as a share of the raw notification read, in one process.

    .venv/bin/python scripts/benchkit/rebuild_ratio.py --database postgres|sqlite
        [--tasks N] [--rounds R] [--rebuild-batch N]

Loads the bench's data set (`benchkit.run.load_data`: the feed, the long tasks, the
ingest tasks) into a fresh database, then measures, `--rounds` times over: the raw
read of the notification log (`benchkit.run.raw_read_rate`, as `scripts/bench` does),
each projection's rebuild, and the raw read again. Each ratio divides a rebuild's
rate by the mean of the two raw reads around it, so a machine shared with other work
moves both sides of it. Issue 4 asks for at least 0.5. `--rebuild-batch` tries
another `projections.runtime.REBUILD_BATCH_SIZE` (notifications per rebuild batch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]

from benchkit.databases import Database, fresh_database  # noqa: E402
from benchkit.progress import say  # noqa: E402
from benchkit.run import load_data, raw_read_rate, rebuild_one  # noqa: E402
from benchkit.scale import QUICK  # noqa: E402
from domain.application import TaskLedger  # noqa: E402
from projections import runtime  # noqa: E402
from projections.runtime import CATALOGUE, Projections  # noqa: E402

TARGET = 0.5


def one_round(db: Database, ledger: TaskLedger, head: int) -> dict[str, float]:
    """Each projection's rebuild rate over the raw read rate measured around it."""
    ratios: dict[str, float] = {}
    projections = Projections(db.store, ledger)
    try:
        for name in CATALOGUE:
            before = raw_read_rate(ledger, head)
            rebuilt = rebuild_one(projections, name, None)
            after = raw_read_rate(ledger, head)
            raw = (before + after) / 2
            ratios[name] = rebuilt.rate / raw
            say(f"  {name}: {rebuilt.rate:,.0f} events/s, raw {raw:,.0f}: {ratios[name]:.2f}x")
    finally:
        projections.close()
    return ratios


def report(kind: str, events: int, rounds: list[dict[str, float]]) -> None:
    batch = runtime.REBUILD_BATCH_SIZE
    print(f"\n{kind}, {events:,} events, rebuild batches of {batch:,}, {len(rounds)} rounds")
    print("rebuild rate / raw notification read rate")
    print(f"{'projection':<12} {'median':>7}  rounds")
    for name in CATALOGUE:
        values = [r[name] for r in rounds]
        mark = "" if statistics.median(values) >= TARGET else f"  (< {TARGET})"
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:<12} {statistics.median(values):>6.2f}x  {shown}{mark}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--tasks", type=int, default=8_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rebuild-batch", type=int, default=runtime.REBUILD_BATCH_SIZE)
    args = parser.parse_args()
    runtime.REBUILD_BATCH_SIZE = args.rebuild_batch
    scale = replace(QUICK, tasks=args.tasks)
    with fresh_database(args.database) as db:
        ledger = TaskLedger(db.store.env("tasks"))
        try:
            say(f"[{args.database}] loading {args.tasks:,} tasks through the library...")
            load_data(scale, ledger)
            head = ledger.recorder.max_notification_id() or 0
            rounds = [one_round(db, ledger, head) for _ in range(args.rounds)]
        finally:
            ledger.close()
    report(args.database, head, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
