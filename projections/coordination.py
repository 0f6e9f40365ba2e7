"""Which runner works on a projection, and when it looks for new events.

Only one runner per projection may write at a time: a second one would only fail
on the tracking row (see `tracked_view`). Runners elect one of them:

- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) keyed by database,
  schema and projection, held by a dedicated connection. The same connection
  LISTENs on the event table's channel (the library NOTIFYs on every insert), so the
  leader wakes within milliseconds of a commit; a lost NOTIFY costs at most one
  polling interval (100 ms), never a stall.
- SQLite: an exclusive `flock` on a file next to the database; the leader polls.
- memory: one process, one runner: no election; the runner polls.

A standby retries the election every `retry_interval` seconds, so it takes over
soon after the leader's process dies (the lock goes with it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

logger = logging.getLogger("tasktrail.projections")


def advisory_key(*parts: str) -> int:
    """A signed 64-bit lock key naming one projection of one store."""
    digest = hashlib.blake2b("\x1f".join(("tasktrail", *parts)).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def store_lock_key(dbname: str, schema: str | None, name: str) -> int:
    """The advisory lock key of `name` (a projection, the enforcer, the migration) in the
    store at `dbname` and `schema` (PostgreSQL's default schema when none is named)."""
    return advisory_key(dbname, schema or "public", name)


def advisory_lock_holders(conn: psycopg.Connection[Any], keys: Iterable[int]) -> dict[int, int]:
    """Each of `keys` held as an advisory lock in the connection's database → the backend
    pid holding it (PostgreSQL shows a 64-bit key as two 32-bit halves)."""
    rows = conn.execute(
        "SELECT classid::bigint, objid::bigint, pid FROM pg_locks "
        "WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchall()
    pid_of = {(classid, objid): pid for classid, objid, pid in rows}
    halves = {key: ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF) for key in keys}
    return {key: pid_of[half] for key, half in halves.items() if half in pid_of}


class Coordinator:
    """No election, polling wake-ups: one runner in one process (memory store)."""

    poll_interval = 0.02
    retry_interval = 0.5

    def acquire(self, stop: threading.Event, *, wait: bool = True) -> bool:
        """Becomes the leader; blocks (unless `wait` is False) until then or until `stop`."""
        return not stop.is_set()

    def still_leader(self) -> bool:
        return True

    def wait_for_events(self, stop: threading.Event) -> None:
        """Returns when new events may have been stored, or after a polling interval."""
        stop.wait(self.poll_interval)

    def release(self) -> None:
        """Gives up leadership (another runner may take over)."""

    def close(self) -> None:
        self.release()


class FileLockCoordinator(Coordinator):
    """Election by an exclusive `flock` on `path` (SQLite); wake-ups by polling."""

    def __init__(self, path: Path, poll_interval: float = 0.02):
        self.path = path
        self.poll_interval = poll_interval
        self._fd: int | None = None

    def acquire(self, stop: threading.Event, *, wait: bool = True) -> bool:
        while not stop.is_set():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not wait:
                    return False
                stop.wait(self.retry_interval)
                continue
            self._fd = fd
            return True
        return False

    def still_leader(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# The advisory lock lives as long as the leader's session. A leader that dies with its
# host (or is cut off) sends no FIN: PostgreSQL would hold the lock until its default
# TCP keepalive gives up, about two hours. These settings make the server drop that
# session, and the standby take over, within about half a minute; the client-side
# keepalives likewise tell a cut-off leader that it no longer leads.
DEAD_PEER_DETECTION: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 "
    "-c tcp_keepalives_count=3 -c tcp_user_timeout=25000",
}


class PostgresCoordinator(Coordinator):
    """Election by advisory lock; wake-ups by LISTEN/NOTIFY with a polling fallback."""

    def __init__(self, conninfo: str, key: int, channel: str | None, poll_interval: float = 0.1):
        self.conninfo = conninfo
        self.key = key
        self.channel = channel
        self.poll_interval = poll_interval
        self._conn: psycopg.Connection[Any] | None = None
        self._leader = False

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._leader = False
            conn = psycopg.connect(
                self.conninfo, autocommit=True, connect_timeout=5, **DEAD_PEER_DETECTION
            )
            if self.channel is not None:  # None: wake-ups by the polling interval alone
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._conn = conn
        return self._conn

    def _drop(self, error: Exception) -> None:
        logger.warning("projection coordinator lost its connection: %s", error)
        self._leader = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def acquire(self, stop: threading.Event, *, wait: bool = True) -> bool:
        while not stop.is_set():
            try:
                row = (
                    self._connection()
                    .execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                    .fetchone()
                )
                self._leader = bool(row and row[0])
            except psycopg.Error as error:
                self._drop(error)
            if self._leader:
                return True
            if not wait:
                return False
            stop.wait(self.retry_interval)
        return False

    def still_leader(self) -> bool:
        return self._leader and self._conn is not None and not self._conn.closed

    def wait_for_events(self, stop: threading.Event) -> None:
        try:
            conn = self._connection()
            for _ in conn.notifies(timeout=self.poll_interval, stop_after=1):
                pass
        except psycopg.Error as error:
            self._drop(error)
            stop.wait(self.poll_interval)

    def release(self) -> None:
        if self._leader and self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self._leader = False

    def close(self) -> None:
        self.release()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
