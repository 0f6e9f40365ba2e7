"""Fresh databases for one run: a new PostgreSQL database, or a SQLite file in a
temporary directory; both removed afterwards."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from store.config import StoreConfig

SERVER_URL = os.environ.get("TASKTRAIL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


@dataclass(frozen=True)
class Database:
    kind: str  # "postgres" or "sqlite"
    url: str  # TASKTRAIL_DATABASE_URL for the service
    workdir: Path  # scratch space of this run: var dir, spec files, server logs

    @property
    def store(self) -> StoreConfig:
        return StoreConfig.from_url(self.url)

    def baseline_env(self) -> dict[str, str]:
        """Where the ingest baseline app writes (same database, its own table)."""
        if self.kind == "postgres":
            return {"BENCH_BASELINE_DSN": self.store.conninfo()}
        return {"BENCH_BASELINE_SQLITE": str(self.workdir / "baseline.sqlite")}

    def analyze(self) -> None:
        """Fresh statistics, as a database that has been running would have."""
        if self.kind == "postgres":
            with psycopg.connect(self.store.conninfo(), autocommit=True) as conn:
                conn.execute("ANALYZE")
        else:
            assert self.store.sqlite_path is not None
            with sqlite3.connect(self.store.sqlite_path) as conn:
                conn.execute("ANALYZE")


@contextmanager
def fresh_database(kind: str) -> Iterator[Database]:
    with tempfile.TemporaryDirectory(prefix=f"tasktrail-bench-{kind}-") as tmp:
        workdir = Path(tmp)
        if kind == "sqlite":
            yield Database(kind, f"sqlite:///{workdir}/tasktrail.sqlite", workdir)
            return
        name = f"tasktrail_bench_{uuid.uuid4().hex[:10]}"
        admin = StoreConfig.from_url(f"{SERVER_URL}/postgres").conninfo()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield Database(kind, f"{SERVER_URL}/{name}", workdir)
        finally:
            for attempt in range(5):
                try:
                    with psycopg.connect(admin, autocommit=True) as conn:
                        conn.execute(
                            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                                sql.Identifier(name)
                            )
                        )
                    break
                except psycopg.Error:
                    if attempt == 4:
                        raise
                    time.sleep(1)
