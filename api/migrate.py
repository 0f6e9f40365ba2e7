"""`tasktrail migrate`: creates every table of a store once, under a lock.

With the library's default (`CREATE_TABLE=y`) every process ran its DDL when it
opened the store, and processes starting at the same moment raced on PostgreSQL's
catalogue ("tuple concurrently updated"). Here the event stores (tasks, logs), the
snapshots, every projection's tables and tracking rows are created by opening the
applications and the read models once, with table creation on, while holding

- PostgreSQL: a session advisory lock keyed by database and schema (the others wait);
- SQLite: an exclusive `flock` on a file next to the database;
- memory://: nothing (nothing outlives the process).

Checkpoints (`checkpoints_events`; SQLite: `<name>.checkpoints.sqlite`) are created
the same way. The DDL is `CREATE ... IF NOT EXISTS` throughout, so migrating again is a no-op.
`serve` and `worker` migrate at start, then open the store with `CREATE_TABLE=n`.
Opening the stores with DDL also makes every event and snapshot table append-only
(`store.append_only`), idempotently.

Before anything else, a PostgreSQL store is checked for durability (`store.durability`):
with `fsync` or `synchronous_commit` off, `migrate`, `serve` and `worker` refuse to run.

Least privilege (PostgreSQL): the tables' owner runs `tasktrail migrate --grant ROLE`,
and the service runs as ROLE (`store.grants`). A process whose role cannot act as the
owner of the existing event table skips the DDL (it could not run it) and opens the
store as it is; run `tasktrail migrate` as the owner after an upgrade.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import replace

import psycopg

from domain.application import TaskLedger
from domain.checkpoint_application import Checkpoints
from domain.log_application import StepLogs
from projections.coordination import store_lock_key
from projections.runtime import Projections
from store.config import StoreConfig
from store.durability import check_durability
from store.grants import grant_service_role

MIGRATION_LOCK = "migrate"
# How long a process waits for another one's migration before giving up (seconds).
LOCK_WAIT_SECONDS = 120


@contextlib.contextmanager
def migration_lock(store: StoreConfig) -> Iterator[None]:
    """Held while one process creates the tables; the others wait their turn."""
    if store.backend == "postgres":
        key = store_lock_key(store.pg_dbname, store.pg_schema, MIGRATION_LOCK)
        with psycopg.connect(store.conninfo(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'")
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    elif store.backend == "sqlite":
        assert store.sqlite_path is not None
        path = store.sqlite_path
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(f"{path.name}.{MIGRATION_LOCK}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
    else:
        yield


def owned_by_another_role(store: StoreConfig) -> str | None:
    """The owner of the task event table when this role cannot act as it (else None)."""
    if store.backend != "postgres":
        return None
    table = f"{TaskLedger.name.lower()}_events"
    with psycopg.connect(store.conninfo(), autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT pg_get_userbyid(c.relowner), pg_has_role(c.relowner, 'USAGE') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (store.pg_schema or "public", table),
        ).fetchone()
    if row is None or row[1]:
        return None
    return str(row[0])


def migrate(store: StoreConfig, *, grant_to: str | None = None) -> bool:
    """Creates every table of `store` that is missing (and, with `grant_to`, grants that
    role what the service needs); False if there is nothing to create.

    Raises `store.durability.UnsafeStoreError` on a PostgreSQL server that may lose
    acknowledged writes.
    """
    if store.backend == "memory":
        return False
    check_durability(store)
    store = replace(store, create_tables=True)
    with migration_lock(store):
        owner = owned_by_another_role(store)
        if owner is not None:
            print(
                f"tasktrail migrate: the tables belong to role {owner!r}; running as "
                f"{store.pg_user!r}, which cannot change them, so no DDL is run "
                f"(after an upgrade, run `tasktrail migrate` as {owner!r})",
                flush=True,
            )
        else:
            ledger = TaskLedger(store.env("tasks"))
            try:
                StepLogs(store.env("logs")).close()
                Checkpoints(store.env("checkpoints")).close()
                Projections(store, ledger).close()
            finally:
                ledger.close()
        if grant_to is not None:
            grant_service_role(store, grant_to)
    return True
