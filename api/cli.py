"""The `tasktrail` command line: serve the API; run the background work; the read models."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import replace

import uvicorn

from api import projections_cli, verify_cli
from api.admin_token import ensure_admin_token, token_path
from api.logging_setup import configure_logging
from api.migrate import migrate
from api.services import running_checkpoint_writer
from api.settings import Settings
from domain.application import TaskLedger
from projections.runtime import Projections
from store.config import StoreConfig
from store.durability import UnsafeStoreError


def migrate_command(args: argparse.Namespace) -> int:
    """Creates every missing table of the store, once, under a lock; safe to repeat."""
    store = StoreConfig.from_url(Settings().database_url)
    if migrate(store, grant_to=args.grant):
        print(f"tasktrail migrate: the {store.backend} store is up to date", flush=True)
        if args.grant:
            print(
                f"tasktrail migrate: granted role {args.grant!r} the service's rights", flush=True
            )
    else:
        print("tasktrail migrate: nothing to do for memory://", flush=True)
    return 0


def migrate_at_start(settings: Settings) -> StoreConfig:
    """Migrates under the lock, then has this process (and its children, through the
    environment) open the store without DDL: processes starting together never race."""
    store = StoreConfig.from_url(settings.database_url)
    if migrate(store):
        os.environ["TASKTRAIL_CREATE_TABLES"] = "false"
        store = replace(store, create_tables=False)
    return store


def serve(args: argparse.Namespace) -> int:
    settings = Settings()
    migrate_at_start(settings)
    token, generated = ensure_admin_token(settings)
    if generated:
        # Printed once, on the run that generated it; afterwards it is in var/admin-token.
        print(
            f"tasktrail: generated the admin token (kept in {token_path(settings)}, mode 0600):\n"
            f"  {token}",
            flush=True,
        )
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        # The app logs each request as JSON itself (api/logging_setup.py).
        access_log=False,
        # Open event streams would otherwise hold a SIGTERM'd server up for ever; after
        # this grace the lifespan still stops the runners and closes the stores.
        timeout_graceful_shutdown=10,
    )
    return 0


def worker(args: argparse.Namespace) -> int:
    """Runs the projection runners, the timeout enforcer and the checkpoint writer, no HTTP,
    until SIGTERM/SIGINT."""
    settings = Settings()
    configure_logging(settings.log_level)
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    store = migrate_at_start(settings)
    ledger = TaskLedger(store.env("tasks"))
    try:
        projections = Projections(store, ledger, batch_size=settings.projection_batch_size)
        try:
            projections.start()
            with running_checkpoint_writer(projections, store, settings):
                print(f"tasktrail worker: running (pid {os.getpid()})", flush=True)
                while not stop.wait(0.2):
                    pass
                print("tasktrail worker: stopping", flush=True)
        finally:
            projections.close()
    finally:
        ledger.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tasktrail", description="tasktrail audit service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the HTTP API")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--workers", type=int, default=1)
    serve_parser.set_defaults(handler=serve)
    commands.add_parser(
        "worker", help="run the projection runners and the timeout enforcer (no HTTP)"
    ).set_defaults(handler=worker)
    migrate_parser = commands.add_parser(
        "migrate", help="create the store's tables once (serve and worker also do it at start)"
    )
    migrate_parser.add_argument(
        "--grant",
        metavar="ROLE",
        help="PostgreSQL: then grant ROLE what the service needs, no more (see store/grants.py)",
    )
    migrate_parser.set_defaults(handler=migrate_command)
    projections_cli.register(commands)
    verify_cli.register(commands)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UnsafeStoreError as refusal:
        print(f"tasktrail: {refusal}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
