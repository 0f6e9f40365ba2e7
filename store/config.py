"""Maps `TASKTRAIL_DATABASE_URL` onto the eventsourcing library's configuration.

Task streams and log streams live in two applications with two event tables:
on PostgreSQL the tables are named after each application; on SQLite, where the
library's table names are fixed, the log streams get a file of their own.

On PostgreSQL the library's factory is used through a thin subclass,
`PostgresStoreFactory`, that gives up at once when no connection can be had, when the
pool already has too many requests waiting, or when the event table stays locked past
`lock_timeout`: the library retries every read and write ten times, and each retry
would wait the whole timeout again, so an unreachable server took a minute or more to
report and a locked table held a write for ten lock timeouts.

Both factories (PostgreSQL, SQLite) make every event and snapshot table they create
append-only (`store.append_only`); tracking and read-model tables stay writable.

A PostgreSQL URL takes these query options (all optional, whole numbers):

| option | default | meaning |
| --- | --- | --- |
| `schema` | `public` | the schema of the tables (must exist) |
| `connect_timeout` | 3 | seconds to wait for a connection, from the pool or a new one |
| `lock_timeout` | 3 | seconds a statement waits for a lock (a write: the event table's) |
| `pool_size` | 1 | connections kept open per application and process |
| `max_overflow` | 8 | extra connections opened under load |
| `max_waiting` | 50 | requests queued for a connection; more fail at once |
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    OperationalError,
    ProcessRecorder,
)
from eventsourcing.postgres import PostgresDatastore, PostgresFactory
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteFactory
from eventsourcing.utils import Environment, EnvType, get_topic
from psycopg.errors import LockNotAvailable
from psycopg.sql import SQL
from psycopg_pool import ConnectionPool, PoolTimeout, TooManyRequests

from domain.store_errors import StoreUnreachableError
from store.append_only import protect_postgres_table, protect_sqlite_table
from store.postgres_recorder import UnpipelinedPostgresRecorder

# A write that finds the pool exhausted waits this long for a connection, then 503.
DEFAULT_CONNECT_TIMEOUT = 3
# URL query options of a PostgreSQL store: name → (default, smallest allowed value).
POSTGRES_OPTIONS: dict[str, tuple[int, int]] = {
    "connect_timeout": (DEFAULT_CONNECT_TIMEOUT, 1),
    # A write waiting longer than this for the event table's lock answers 503: a table
    # locked by a stuck session or an operator must not hold every writer for ever.
    "lock_timeout": (3, 1),
    # One connection kept open, up to nine under load, per application and process: an
    # idle process holds about twenty in all (pools, projection views, the elected
    # workers' lock sessions), so four processes fit PostgreSQL's default of 100.
    "pool_size": (1, 1),
    "max_overflow": (8, 0),
    "max_waiting": (50, 0),
}


# A pooled connection idle longer than this is checked (one empty query) before use.
PING_AFTER_IDLE_SECONDS = 1.0


def _check_if_idle(conn: Any) -> None:
    """The pool's check of a connection it hands out: only after it sat idle.

    Checking every checkout (the library's `POSTGRES_PRE_PING`) cost one round trip
    per query. A connection in steady use has just answered; one that sat idle may
    have been dropped (a server restart, an idle timeout on the way), and a failed
    check makes the pool discard it and hand out another. A connection dropped within
    the last second fails its query instead: the library's reads and writes retry
    that on another connection, and a write that cannot tell whether it was stored
    reads its own events back (`domain.resilient_writes`).
    """
    returned_at = getattr(conn, "tasktrail_returned_at", None)
    if returned_at is None or monotonic() - returned_at > PING_AFTER_IDLE_SECONDS:
        ConnectionPool.check_connection(conn)


class StoreBusyError(StoreUnreachableError):
    """Raised when the event table stayed locked past `lock_timeout`, or when too many
    requests already wait for a connection: the store is there but cannot take the
    write now (the API answers 503, as for an unreachable store)."""


class _FailFastPostgresDatastore(PostgresDatastore):
    """The library's datastore, giving up at once (no retries) on a pool timeout, a full
    pool queue or a lock timeout, and bounding every statement's wait for a lock."""

    @contextmanager
    def get_connection(self) -> Iterator[Any]:
        try:
            with super().get_connection() as conn:
                if self.lock_timeout and not getattr(conn, "tasktrail_lock_timeout", False):
                    # The library bounds only its writes' LOCK TABLE; a read behind an
                    # ACCESS EXCLUSIVE lock (an operator's LOCK TABLE, DDL) would wait
                    # for ever. Set once per connection, for the whole session.
                    conn.execute(SQL("SET lock_timeout = '{}s'").format(self.lock_timeout))
                    conn.tasktrail_lock_timeout = True  # type: ignore[attr-defined]
                try:
                    yield conn
                finally:
                    conn.tasktrail_returned_at = monotonic()  # type: ignore[attr-defined]
        except OperationalError as error:
            cause = error.__cause__
            if isinstance(cause, TooManyRequests | LockNotAvailable):
                raise StoreBusyError(str(error)) from error
            if isinstance(cause, PoolTimeout):
                raise StoreUnreachableError(str(error)) from error
            raise


class PostgresStoreFactory(PostgresFactory):
    """`eventsourcing.postgres`, failing fast when PostgreSQL cannot be reached, writing
    without psycopg's pipeline (see `store.postgres_recorder`), and making every event
    and snapshot table it creates append-only."""

    application_recorder_class = UnpipelinedPostgresRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        # The subclass only overrides a method, so the datastore the library built
        # (with every setting it parsed from the environment) can simply take it on.
        self.datastore.__class__ = _FailFastPostgresDatastore
        # psycopg_pool keeps its check here; were it renamed, the library's check of
        # every checkout (POSTGRES_PRE_PING) would simply stay in place.
        self.datastore.pool._check = _check_if_idle  # type: ignore[attr-defined]

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self._append_only(super().aggregate_recorder(purpose))

    def application_recorder(self) -> ApplicationRecorder:
        return self._append_only(super().application_recorder())

    def process_recorder(self) -> ProcessRecorder:
        return self._append_only(super().process_recorder())

    def _append_only(self, recorder: Any) -> Any:
        if self.env_create_table():
            protect_postgres_table(self.datastore, recorder.events_table_name)
        return recorder


class SQLiteStoreFactory(SQLiteFactory):
    """`eventsourcing.sqlite`, making every event and snapshot table it creates append-only."""

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self._append_only(super().aggregate_recorder(purpose))

    def application_recorder(self) -> ApplicationRecorder:
        return self._append_only(super().application_recorder())

    def process_recorder(self) -> ProcessRecorder:
        return self._append_only(super().process_recorder())

    def _append_only(self, recorder: Any) -> Any:
        if self.env_create_table():
            protect_sqlite_table(
                self.datastore,
                recorder.events_table_name,
                # The snapshot table is WITHOUT ROWID; the application's has one.
                has_rowid=isinstance(recorder, SQLiteApplicationRecorder),
            )
        return recorder


@dataclass(frozen=True)
class StoreConfig:
    """Where events are kept: `memory`, `sqlite` or `postgres`, and how to reach it."""

    backend: str
    sqlite_path: Path | None = None
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str = ""
    pg_dbname: str = "postgres"
    pg_schema: str = ""
    # Seconds to wait for a connection (from the pool, or a new one) before giving up.
    pg_connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    pg_lock_timeout: int = POSTGRES_OPTIONS["lock_timeout"][0]
    pg_pool_size: int = POSTGRES_OPTIONS["pool_size"][0]
    pg_max_overflow: int = POSTGRES_OPTIONS["max_overflow"][0]
    pg_max_waiting: int = POSTGRES_OPTIONS["max_waiting"][0]
    # Whether opening the store creates its missing tables (the library's CREATE_TABLE).
    # `serve` and `worker` create them once, under a lock (`api.migrate`), and then open
    # the store without, so processes starting together never race on DDL.
    create_tables: bool = True

    @classmethod
    def from_url(cls, url: str) -> StoreConfig:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "memory":
            return cls(backend="memory")
        if scheme == "sqlite":
            # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy has them.
            raw = unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""
            if not raw:
                raise ValueError("a SQLite URL needs a path: sqlite:///path/to/file.sqlite")
            return cls(backend="sqlite", sqlite_path=Path(raw))
        if scheme in ("postgresql", "postgres"):
            query = parse_qs(parts.query)
            options = _postgres_options(query)
            return cls(
                backend="postgres",
                pg_host=parts.hostname or "127.0.0.1",
                pg_port=parts.port or 5432,
                pg_user=unquote(parts.username or "postgres"),
                pg_password=unquote(parts.password or ""),
                pg_dbname=parts.path.lstrip("/") or "postgres",
                pg_schema=query.get("schema", [""])[0],
                pg_connect_timeout=options["connect_timeout"],
                pg_lock_timeout=options["lock_timeout"],
                pg_pool_size=options["pool_size"],
                pg_max_overflow=options["max_overflow"],
                pg_max_waiting=options["max_waiting"],
            )
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use memory://, sqlite:/// or postgresql://"
        )

    def env(self, purpose: str = "tasks") -> dict[str, str]:
        """The library's environment for one application (`tasks` or `logs`)."""
        if self.backend == "memory":
            return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
        if self.backend == "sqlite":
            assert self.sqlite_path is not None
            path = self.sqlite_path
            if purpose != "tasks":
                path = path.with_name(f"{path.stem}.{purpose}{path.suffix or '.sqlite'}")
            path.parent.mkdir(parents=True, exist_ok=True)
            return {
                "PERSISTENCE_MODULE": get_topic(SQLiteStoreFactory),
                "SQLITE_DBNAME": str(path),
                "SQLITE_LOCK_TIMEOUT": "10",
                "CREATE_TABLE": "y" if self.create_tables else "n",
            }
        return {
            "PERSISTENCE_MODULE": get_topic(PostgresStoreFactory),
            "POSTGRES_HOST": self.pg_host,
            "POSTGRES_PORT": str(self.pg_port),
            "POSTGRES_USER": self.pg_user,
            "POSTGRES_PASSWORD": self.pg_password,
            "POSTGRES_DBNAME": self.pg_dbname,
            "POSTGRES_SCHEMA": self.pg_schema,
            # The library uses this as the pool's wait for a connection (not libpq's
            # connect_timeout): it bounds how long an unreachable server takes to report.
            "POSTGRES_CONNECT_TIMEOUT": str(self.pg_connect_timeout),
            "POSTGRES_POOL_SIZE": str(self.pg_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(self.pg_max_overflow),
            "POSTGRES_MAX_WAITING": str(self.pg_max_waiting),
            "POSTGRES_LOCK_TIMEOUT": str(self.pg_lock_timeout),
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
            "POSTGRES_PRE_PING": "y",
            "CREATE_TABLE": "y" if self.create_tables else "n",
        }

    def conninfo(self) -> str:
        """A libpq connection string (PostgreSQL only)."""
        password = f" password={self.pg_password}" if self.pg_password else ""
        return (
            f"host={self.pg_host} port={self.pg_port} user={self.pg_user} "
            f"dbname={self.pg_dbname}{password}"
        )


def _postgres_options(query: dict[str, list[str]]) -> dict[str, int]:
    """The whole-number query options of a PostgreSQL URL, each checked, with defaults."""
    options = {}
    for name, (default, smallest) in POSTGRES_OPTIONS.items():
        raw = query.get(name, [str(default)])[0]
        if not raw.isdigit() or int(raw) < smallest:
            raise ValueError(f"{name} must be a whole number, at least {smallest}: {raw!r}")
        options[name] = int(raw)
    return options
