"""Maps `TASKTRAIL_DATABASE_URL` onto the eventsourcing library's configuration.

Task streams and log streams live in two applications with two event tables:
on PostgreSQL the tables are named after each application; on SQLite, where the
library's table names are fixed, the log streams get a file of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


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
            return cls(
                backend="postgres",
                pg_host=parts.hostname or "127.0.0.1",
                pg_port=parts.port or 5432,
                pg_user=unquote(parts.username or "postgres"),
                pg_password=unquote(parts.password or ""),
                pg_dbname=parts.path.lstrip("/") or "postgres",
                pg_schema=query.get("schema", [""])[0],
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
            }
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_HOST": self.pg_host,
            "POSTGRES_PORT": str(self.pg_port),
            "POSTGRES_USER": self.pg_user,
            "POSTGRES_PASSWORD": self.pg_password,
            "POSTGRES_DBNAME": self.pg_dbname,
            "POSTGRES_SCHEMA": self.pg_schema,
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_MAX_OVERFLOW": "10",
            "POSTGRES_MAX_WAITING": "50",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
            "POSTGRES_PRE_PING": "y",
        }

    def conninfo(self) -> str:
        """A libpq connection string (PostgreSQL only)."""
        return (
            f"host={self.pg_host} port={self.pg_port} user={self.pg_user} "
            f"dbname={self.pg_dbname}" + (f" password={self.pg_password}" if self.pg_password else "")
        )
