"""`tasktrail projections status|rebuild`: the read models, seen and rebuilt from a shell."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, TextIO

from api.settings import Settings
from domain.application import TaskLedger
from projections.runtime import CATALOGUE, Projections, RunnerActiveError
from store.config import StoreConfig


def _open() -> tuple[TaskLedger, Projections]:
    store = StoreConfig.from_url(Settings().database_url)
    ledger = TaskLedger(store.env("tasks"))
    return ledger, Projections(store, ledger)


def _runner_elsewhere(projections: Projections, name: str) -> str:
    if projections.store.backend == "memory":
        return "-"
    coordinator = projections.coordinator(name)
    try:
        return "none" if coordinator.acquire(threading.Event(), wait=False) else "active"
    finally:
        coordinator.close()


def status(args: argparse.Namespace) -> int:
    ledger, projections = _open()
    try:
        print(f"{'projection':<12} {'position':>12} {'head':>12} {'lag':>10}  runner")
        for row in projections.status():
            runner = _runner_elsewhere(projections, row["name"])
            print(
                f"{row['name']:<12} {row['position']:>12,} {row['head']:>12,} "
                f"{row['lag']:>10,}  {runner}"
            )
    finally:
        projections.close()
        ledger.close()
    return 0


class ProgressBar:
    """A one-line progress bar on stderr: share of positions done, and events per second."""

    def __init__(self, name: str, head: int, out: TextIO | None = None, width: int = 30):
        self.name, self.head, self.width = name, max(head, 1), width
        self.out = out or sys.stderr
        self.events = 0
        self.started = time.perf_counter()
        self._drawn = 0.0

    def update(self, position: int, notifications: int) -> None:
        self.events += notifications
        now = time.perf_counter()
        if now - self._drawn >= 0.1 or position >= self.head:
            self._drawn = now
            self.draw(position)

    def draw(self, position: int) -> None:
        share = min(1.0, position / self.head)
        done = int(share * self.width)
        rate = self.events / max(time.perf_counter() - self.started, 1e-9)
        self.out.write(
            f"\r{self.name:<12} [{'#' * done}{'-' * (self.width - done)}] {share:6.1%} "
            f"{self.events:>12,} events {rate:>10,.0f} events/s"
        )
        self.out.flush()

    def close(self) -> None:
        self.out.write("\n")
        self.out.flush()


def rebuild(args: argparse.Namespace) -> int:
    ledger, projections = _open()
    names = [args.name] if args.name else list(CATALOGUE)
    try:
        head = ledger.recorder.max_notification_id() or 0
        for name in names:
            bar = ProgressBar(name, head)
            try:
                result = projections.rebuild(name, on_batch=bar.update)
            except RunnerActiveError as error:
                print(f"tasktrail: {error}", file=sys.stderr)
                return 1
            if result.events == 0:
                bar.draw(result.position)
            bar.close()
            print(
                f"{name}: rebuilt from {result.events:,} events up to position "
                f"{result.position:,} in {result.seconds:.1f} s ({result.rate:,.0f} events/s)"
            )
    finally:
        projections.close()
        ledger.close()
    return 0


def register(commands: Any) -> None:
    """Adds `projections status` and `projections rebuild [NAME]` to the CLI."""
    parser = commands.add_parser("projections", help="read models: status and rebuild")
    sub = parser.add_subparsers(dest="projections_command", required=True)
    sub.add_parser("status", help="each projection's position and lag").set_defaults(handler=status)
    rebuild_parser = sub.add_parser(
        "rebuild", help="empty a projection and replay every event from position 0"
    )
    rebuild_parser.add_argument("name", nargs="?", choices=sorted(CATALOGUE))
    rebuild_parser.set_defaults(handler=rebuild)
