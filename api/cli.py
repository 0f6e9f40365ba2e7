"""The `tasktrail` command line: serve the API; run the background work; the read models."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace

import uvicorn

from api import metrics, projections_cli, verify_cli
from api.admin_token import ensure_admin_token, token_path
from api.logging_setup import configure_server_logging, server_log_config
from api.migrate import migrate
from api.services import running_checkpoint_writer
from api.settings import Settings
from domain.application import TaskLedger
from projections.runtime import Projections
from store.config import StoreConfig
from store.durability import UnsafeStoreError

logger = logging.getLogger("tasktrail.cli")


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
    """The HTTP API. One process: the app runs the background work itself (its lifespan).
    `--workers N`: N web processes, and the background work once, in this process that
    supervises them, not once per web process."""
    settings = Settings()
    if args.workers > 1:
        # This process works before uvicorn would configure logging: migrates, runs the
        # background. (One process: uvicorn configures it before the app starts.)
        configure_server_logging(settings.log_level)
    store = migrate_at_start(settings)
    announce_admin_token(settings)
    if args.workers > 1:
        serve_several(args, settings, store)
    else:
        run_uvicorn(args, settings)
    return 0


def announce_admin_token(settings: Settings) -> None:
    token, generated = ensure_admin_token(settings)
    if generated:
        # Printed once, for a human, on the run that generated it; never logged, so the
        # secret stays out of log shipping. Afterwards it is in var/admin-token.
        print(
            f"tasktrail: generated the admin token (kept in {token_path(settings)}, mode 0600):\n"
            f"  {token}",
            flush=True,
        )


def serve_several(args: argparse.Namespace, settings: Settings, store: StoreConfig) -> None:
    """`--workers N`: the background work here, in the supervisor, around uvicorn's run;
    stopped once uvicorn returns (SIGTERM: after the web processes have finished)."""
    # The web processes inherit the environment: they serve HTTP, nothing in the background.
    os.environ["TASKTRAIL_RUN_PROJECTIONS"] = "false"
    with metrics.shared_across_processes(), ExitStack() as background:
        if settings.run_projections:  # false: a `tasktrail worker` does it elsewhere
            projections = background.enter_context(background_work(settings, store))
            background.enter_context(metrics.publishing(projections))
        run_uvicorn(args, settings)


def run_uvicorn(args: argparse.Namespace, settings: Settings) -> None:
    """Serves until SIGTERM/SIGINT (`--workers N`: supervising N web processes)."""
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        # Applied by uvicorn in every process it starts: its own lines are JSON too.
        log_config=server_log_config(settings.log_level),
        log_level=settings.log_level,
        # The app logs each request as JSON itself (api/logging_setup.py).
        access_log=False,
        # Open event streams would otherwise hold a SIGTERM'd server up for ever; after
        # this grace the lifespan still stops the runners and closes the stores.
        timeout_graceful_shutdown=10,
        # A web process answers the supervisor's health check only once it has imported
        # the app (seconds on a busy host); uvicorn's 5 s would kill and restart it.
        timeout_worker_healthcheck=30,
    )


@contextmanager
def background_work(settings: Settings, store: StoreConfig) -> Iterator[Projections]:
    """The projection runners, the timeout enforcer and the checkpoint writer, running
    while the block runs, each elected (one process per deployment works, the others
    stand by): what `tasktrail worker` runs, and `serve --workers N` runs once."""
    ledger = TaskLedger(store.env("tasks"))
    try:
        projections = Projections(store, ledger, batch_size=settings.projection_batch_size)
        try:
            projections.start()
            with running_checkpoint_writer(projections, store, settings):
                logger.info("background work running")
                try:
                    yield projections
                finally:
                    logger.info("background work stopping")
        finally:
            projections.close()
    finally:
        ledger.close()


def worker(args: argparse.Namespace) -> int:
    """Runs the projection runners, the timeout enforcer and the checkpoint writer, no HTTP,
    until SIGTERM/SIGINT."""
    settings = Settings()
    configure_server_logging(settings.log_level)
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        store = migrate_at_start(settings)
        with background_work(settings, store):
            # On stdout, whatever the log level: whoever started the process (a script,
            # a test) waits for this line. The logs, JSON, are on stderr.
            print(f"tasktrail worker: running (pid {os.getpid()})", flush=True)
            while not stop.wait(0.2):
                pass
    finally:
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
