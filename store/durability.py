"""Refuses to start on a PostgreSQL server that may lose acknowledged writes.

With `fsync` off, a crash of the machine can lose or corrupt committed data; with
`synchronous_commit` off, a commit is acknowledged before it is on disk, so a crash
loses the last acknowledged events. An audit trail must not say "stored" and then
forget, so `serve`, `worker` and `migrate` stop with a message naming the setting,
unless `TASKTRAIL_ALLOW_UNSAFE_STORE=1` says the store is a throwaway one (tests,
demos), when they only warn.

The settings are read on a connection made as the service's own role and database,
so a per-role or per-database `ALTER ... SET synchronous_commit = off` is seen too.
"""

from __future__ import annotations

import os
import sys

import psycopg

from store.config import StoreConfig

ALLOW_UNSAFE_ENV = "TASKTRAIL_ALLOW_UNSAFE_STORE"
# Setting → the values that may lose acknowledged commits.
UNSAFE_VALUES: dict[str, frozenset[str]] = {
    "fsync": frozenset({"off"}),
    "synchronous_commit": frozenset({"off"}),
}


class UnsafeStoreError(RuntimeError):
    """Raised when the PostgreSQL server may lose acknowledged writes."""


def unsafe_settings(store: StoreConfig) -> list[str]:
    """`name=value` for each durability setting of the store's server that is unsafe."""
    if store.backend != "postgres":
        return []
    with psycopg.connect(
        store.conninfo(), autocommit=True, connect_timeout=store.pg_connect_timeout
    ) as conn:
        found = []
        for name, unsafe in UNSAFE_VALUES.items():
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            value = str(row[0]) if row else ""
            if value.lower() in unsafe:
                found.append(f"{name}={value}")
        return found


def allow_unsafe_store() -> bool:
    return os.environ.get(ALLOW_UNSAFE_ENV, "").strip().lower() in ("1", "true", "yes")


def check_durability(store: StoreConfig) -> None:
    """Raises UnsafeStoreError if the store may lose acknowledged writes (unless allowed)."""
    found = unsafe_settings(store)
    if not found:
        return
    settings = ", ".join(found)
    if allow_unsafe_store():
        print(
            f"tasktrail: WARNING: PostgreSQL has {settings}: acknowledged events can be lost "
            f"in a crash; running anyway because {ALLOW_UNSAFE_ENV}=1",
            file=sys.stderr,
            flush=True,
        )
        return
    raise UnsafeStoreError(
        f"refusing to run: PostgreSQL has {settings}, so a crash can lose events that "
        f"were acknowledged as stored. Turn it on (for example `ALTER SYSTEM SET "
        f"{found[0].split('=')[0]} = on` and reload, or remove the per-role/database "
        f"override), or set {ALLOW_UNSAFE_ENV}=1 if this store is a throwaway one."
    )
