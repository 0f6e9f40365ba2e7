"""`tasktrail migrate`: creates every table of a store once, under a lock.

With the library's default (`CREATE_TABLE=y`) every process ran its DDL when it
opened the store, and processes starting at the same moment raced on PostgreSQL's
catalogue ("tuple concurrently updated"). Here the event stores (tasks, logs), the
snapshots, every projection's tables and tracking rows are created by opening the
applications and the read models once, with table creation on, while holding

- PostgreSQL: a session advisory lock keyed by database and schema (the others wait);
- SQLite: an exclusive `flock` on a file next to the database;
- memory://: nothing (nothing outlives the process).

The DDL is `CREATE ... IF NOT EXISTS` throughout, so migrating again is a no-op.
`serve` and `worker` migrate at start, then open the store with `CREATE_TABLE=n`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import replace

import psycopg

from domain.application import TaskLedger
from domain.log_application import StepLogs
from projections.coordination import advisory_key
from projections.runtime import Projections
from store.config import StoreConfig

MIGRATION_LOCK = "migrate"
# How long a process waits for another one's migration before giving up (seconds).
LOCK_WAIT_SECONDS = 120


@contextlib.contextmanager
def migration_lock(store: StoreConfig) -> Iterator[None]:
    """Held while one process creates the tables; the others wait their turn."""
    if store.backend == "postgres":
        key = advisory_key(store.pg_dbname, store.pg_schema or "public", MIGRATION_LOCK)
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


def migrate(store: StoreConfig) -> bool:
    """Creates every table of `store` that is missing; False if there is nothing to create."""
    if store.backend == "memory":
        return False
    store = replace(store, create_tables=True)
    with migration_lock(store):
        ledger = TaskLedger(store.env("tasks"))
        try:
            StepLogs(store.env("logs")).close()
            Projections(store, ledger).close()
        finally:
            ledger.close()
    return True
