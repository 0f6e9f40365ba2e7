"""Fixtures shared by every layer: the stores the suite runs against.

`store_url` is parametrised over memory, SQLite and PostgreSQL, so a behaviour is
written once and runs on every backend. Each test gets fresh tables: a new SQLite
file, or a new PostgreSQL schema dropped afterwards.

PostgreSQL comes from TASKTRAIL_TEST_POSTGRES_URL (default: the local server).
When it is unreachable the PostgreSQL tests are skipped with a loud line, unless
TASKTRAIL_REQUIRE_POSTGRES=1 (as in CI), when they fail.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from functools import cache
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from domain.application import TaskLedger
from store.config import StoreConfig

POSTGRES_URL = os.environ.get(
    "TASKTRAIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("TASKTRAIL_REQUIRE_POSTGRES") == "1"
BACKENDS = ["memory", "sqlite", "postgres"]


@cache
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    try:
        with psycopg.connect(StoreConfig.from_url(POSTGRES_URL).conninfo(), connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}".strip()


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    if REQUIRE_POSTGRES:
        pytest.fail(f"TASKTRAIL_REQUIRE_POSTGRES=1 but {problem}")
    # Loud on purpose: a skipped backend must never pass unnoticed.
    print(f"\n!!! SKIPPING POSTGRESQL TESTS: {problem} !!!", file=sys.stderr)
    pytest.skip(f"SKIPPING POSTGRESQL TESTS: {problem}")


def admin_connect() -> psycopg.Connection:
    return psycopg.connect(StoreConfig.from_url(POSTGRES_URL).conninfo(), autocommit=True)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose schema is new for this test and dropped after it."""
    require_postgres()
    schema = f"t_{uuid4().hex[:12]}"
    with admin_connect() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}schema={schema}"
    finally:
        with admin_connect() as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A fresh store of each kind in turn: memory, SQLite, PostgreSQL."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def ledger(store_url: str) -> Iterator[TaskLedger]:
    app = TaskLedger(StoreConfig.from_url(store_url).env())
    try:
        yield app
    finally:
        app.close()
