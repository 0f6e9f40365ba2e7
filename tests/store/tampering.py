"""Editing stored events on purpose, for tamper tests: `with tamper(store_url) as conn:`.

The event and snapshot tables refuse UPDATE, DELETE and TRUNCATE (`store.append_only`),
so a test that plays an attacker with database access turns the protection off first,
as such an attacker would have to:

- PostgreSQL: `SET session_replication_role = replica` on the yielded connection (needs
  a superuser, as the suite's `postgres` is); ordinary triggers do not fire in it.
  The connection is in autocommit mode with `search_path` set to the store's schema,
  so `UPDATE taskledger_events SET ...` edits the store under test.
- SQLite: the triggers are dropped, and created again (as they were) on leaving.
  `purpose` picks the file: `tasks` (task events, snapshots), `logs`, `checkpoints`.

On leaving, the protection is back: other connections never saw it off (PostgreSQL)
or see it restored (SQLite).

    with tamper(store_url) as conn:
        conn.execute("UPDATE taskledger_events SET state = %s WHERE ...", (...,))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from store.append_only import TRIGGER
from store.config import StoreConfig


@contextmanager
def tamper(store_url: str, purpose: str = "tasks") -> Iterator[Any]:
    """A raw connection to the store with the append-only protection off."""
    store = StoreConfig.from_url(store_url)
    if store.backend == "postgres":
        with psycopg.connect(store.conninfo(), autocommit=True) as conn:
            schema = store.pg_schema or "public"
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            conn.execute("SET session_replication_role = replica")
            try:
                yield conn
            finally:
                conn.execute("RESET session_replication_role")
    elif store.backend == "sqlite":
        path = store.env(purpose)["SQLITE_DBNAME"]
        lite = sqlite3.connect(path, isolation_level=None)
        try:
            triggers = lite.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE ?",
                (f"{TRIGGER}%",),
            ).fetchall()
            for name, _ in triggers:
                lite.execute(f'DROP TRIGGER "{name}"')
            try:
                yield lite
            finally:
                for _, create in triggers:
                    lite.execute(create)
        finally:
            lite.close()
    else:
        raise ValueError("memory:// has no database to tamper with")
