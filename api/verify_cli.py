"""`tasktrail verify`: recompute the hash chains of the store (or check an export offline).

It reads the store the service is configured for (`TASKTRAIL_DATABASE_URL`), with a
progress bar on stderr, prints each problem found on stdout and exits 1 when there
is any (0 when there is none). Without `--org` the whole store is checked, which
also names tasks whose first event is gone (their org is unknown). Checkpoints are
checked too when the signing key's file is there (`TASKTRAIL_SIGNING_KEY`); it is
never created here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from api.services import signing_key_path
from api.settings import Settings
from domain.application import TaskLedger
from domain.checkpoint_application import Checkpoints
from integrity.bundle import verify_bundle
from integrity.checkpoints import checkpoint_check
from integrity.signing import PublicKey, SigningKey
from integrity.verify import ExtraCheck, VerifyReport, verify_store
from store.config import StoreConfig

BAR_WIDTH = 30


class ProgressBar:
    """`[#####.....]  45%  45000/100000 rows` on one line, redrawn at most 10 times a second."""

    def __init__(self, out: TextIO):
        self.out = out
        self.drawn_at = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.drawn_at < 0.1 and done < total:
            return
        self.drawn_at = now
        share = done / total if total else 1.0
        filled = int(BAR_WIDTH * share)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.out.write(f"\r[{bar}] {share:4.0%}  {done}/{total} rows")
        self.out.flush()

    def finish(self) -> None:
        if self.drawn_at:
            self.out.write("\n")
            self.out.flush()


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "verify", help="recompute the stored hash chains (exit 1 when anything is wrong)"
    )
    parser.add_argument("--org", help="only this org's tasks (default: the whole store)")
    parser.add_argument("--task-id", help="only this task's chain")
    parser.add_argument("--bundle", metavar="FILE", help="check an export file offline instead")
    parser.add_argument(
        "--public-key", metavar="BASE64", help="with --bundle: the key to trust (else the file's)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=verify_command)


def verify_command(args: argparse.Namespace) -> int:
    if args.bundle:
        bundle = verify_bundle(args.bundle, args.public_key)
        return _print(bundle.as_json(), bundle.ok, args.json)
    settings = Settings()
    store = StoreConfig.from_url(settings.database_url)
    ledger = TaskLedger(store.env("tasks"))
    checkpoints = Checkpoints(store.env("checkpoints"))
    bar = ProgressBar(sys.stderr)
    started = time.monotonic()
    try:
        report = verify_store(
            ledger,
            org=args.org,
            task_id=args.task_id,
            progress=bar,
            extra_checks=_checkpoint_checks(settings, checkpoints, args),
        )
    finally:
        bar.finish()
        checkpoints.close()
        ledger.close()
    seconds = time.monotonic() - started
    if args.task_id and report.tasks_checked == 0:
        print(f"tasktrail verify: no task {args.task_id} in the store", file=sys.stderr)
        return 2
    print(
        f"tasktrail verify: {report.events_checked} events of {report.tasks_checked} tasks "
        f"in {seconds:.1f} s ({report.events_checked / max(seconds, 1e-9):,.0f} events/s)",
        file=sys.stderr,
    )
    return _print(_report_json(report), report.ok, args.json)


def _checkpoint_checks(
    settings: Settings, checkpoints: Checkpoints, args: argparse.Namespace
) -> list[ExtraCheck]:
    path = signing_key_path(settings)
    if not path.exists():
        print(f"tasktrail verify: no signing key at {path}: no checkpoint check", file=sys.stderr)
        return []
    keys = [SigningKey.from_pem(path.read_bytes()).public]
    keys += [PublicKey.from_base64(text) for text in settings.previous_public_keys]
    return [checkpoint_check(checkpoints, keys, org=args.org, task_id=args.task_id)]


def _report_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "tasks_checked": report.tasks_checked,
        "events_checked": report.events_checked,
        "problems": [
            {"task_id": p.task_id, "version": p.version, "reason": p.reason}
            | ({"checkpoint": p.checkpoint} if p.checkpoint is not None else {})
            for p in report.problems
        ],
    }


def _print(report: dict[str, Any], ok: bool, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for problem in report["problems"]:
            where = " ".join(f"{k} {v}" for k, v in problem.items() if k != "reason" and v)
            print(f"{where}: {problem['reason']}")
        print("ok" if ok else f"{len(report['problems'])} problem(s) found")
    return 0 if ok else 1
