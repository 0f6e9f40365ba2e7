"""Maps `TASKTRAIL_DATABASE_URL` onto the eventsourcing library's configuration.

Task streams and log streams live in two applications with two event tables:
on PostgreSQL the tables are named after each application; on SQLite, where the
library's table names are fixed, the log streams get a file of their own.

On PostgreSQL the library's factory is used through a thin subclass,
`PostgresStoreFactory`, that gives up at once when no connection can be had: the
library retries every read and write ten times, and each retry would wait the whole
connect timeout again, so an unreachable server took a minute or more to report.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from eventsourcing.persistence import OperationalError
from eventsourcing.postgres import PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, EnvType, get_topic
from psycopg_pool import PoolTimeout

from domain.store_errors import StoreUnreachableError
from store.postgres_recorder import UnpipelinedPostgresRecorder

DEFAULT_CONNECT_TIMEOUT = 5


class _FailFastPostgresDatastore(PostgresDatastore):
    """The library's datastore, raising StoreUnreachableError when the pool times out."""

    @contextmanager
    def get_connection(self) -> Iterator[Any]:
        try:
            with super().get_connection() as conn:
                yield conn
        except OperationalError as error:
            if isinstance(error.__cause__, PoolTimeout):
                raise StoreUnreachableError(str(error)) from error
            raise


class PostgresStoreFactory(PostgresFactory):
    """`eventsourcing.postgres`, failing fast when PostgreSQL cannot be reached, and
    writing without psycopg's pipeline (see `store.postgres_recorder`)."""

    application_recorder_class = UnpipelinedPostgresRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        # The subclass only overrides a method, so the datastore the library built
        # (with every setting it parsed from the environment) can simply take it on.
        self.datastore.__class__ = _FailFastPostgresDatastore


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
            timeout = query.get("connect_timeout", [str(DEFAULT_CONNECT_TIMEOUT)])[0]
            if not timeout.isdigit() or int(timeout) < 1:
                raise ValueError(f"connect_timeout must be a whole number of seconds: {timeout!r}")
            return cls(
                backend="postgres",
                pg_host=parts.hostname or "127.0.0.1",
                pg_port=parts.port or 5432,
                pg_user=unquote(parts.username or "postgres"),
                pg_password=unquote(parts.password or ""),
                pg_dbname=parts.path.lstrip("/") or "postgres",
                pg_schema=query.get("schema", [""])[0],
                pg_connect_timeout=int(timeout),
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
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
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
            # Two connections kept open, up to ten under load, per application and
            # process: `--workers 4` with the task and log applications stays at 80,
            # under PostgreSQL's default max_connections of 100.
            "POSTGRES_POOL_SIZE": "2",
            "POSTGRES_MAX_OVERFLOW": "8",
            "POSTGRES_MAX_WAITING": "50",
            "POSTGRES_LOCK_TIMEOUT": "5",
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
