"""The database refuses every way of changing stored events and snapshots."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from api.migrate import migrate
from domain.application import TaskLedger
from store.append_only import TRIGGER
from store.config import StoreConfig
from tests.application.support import create_executable, job, start
from tests.store.tampering import tamper

REFUSED_ON_POSTGRES = {
    "update": "UPDATE taskledger_events SET topic = 'forged' WHERE originator_id = %(id)s",
    "update matching no row": "UPDATE taskledger_events SET topic = 'forged' WHERE false",
    "upsert": (
        "INSERT INTO taskledger_events (originator_id, originator_version, topic, state) "
        "VALUES (%(id)s, 1, 'forged', '') ON CONFLICT (originator_id, originator_version) "
        "DO UPDATE SET topic = 'forged'"
    ),
    "upsert of a new row": (
        "INSERT INTO taskledger_events (originator_id, originator_version, topic, state) "
        "VALUES (%(id)s, 999, 'forged', '') ON CONFLICT (originator_id, originator_version) "
        "DO UPDATE SET topic = 'forged'"
    ),
    "delete": "DELETE FROM taskledger_events WHERE originator_id = %(id)s",
    "delete matching no row": "DELETE FROM taskledger_events WHERE false",
    "truncate": "TRUNCATE taskledger_events",
}
OPERATION = {
    "update": "UPDATE",
    "update matching no row": "UPDATE",
    "upsert": "UPDATE",
    "upsert of a new row": "UPDATE",
    "delete": "DELETE",
    "delete matching no row": "DELETE",
    "truncate": "TRUNCATE",
}

REFUSED_ON_SQLITE = {
    "update": ("UPDATE stored_events SET topic = 'forged' WHERE originator_id = :id", "UPDATE"),
    "delete": ("DELETE FROM stored_events WHERE originator_id = :id", "DELETE"),
    "delete all": ("DELETE FROM stored_events", "DELETE"),
    "insert or replace": (
        "INSERT OR REPLACE INTO stored_events VALUES (:id, 1, 'forged', x'00')",
        "INSERT over a stored row",
    ),
    "replace": (
        "REPLACE INTO stored_events VALUES (:id, 1, 'forged', x'00')",
        "INSERT over a stored row",
    ),
    "upsert": (
        "INSERT INTO stored_events VALUES (:id, 1, 'forged', x'00') "
        "ON CONFLICT DO UPDATE SET topic = 'forged'",
        "INSERT over a stored row",
    ),
    "replace by rowid": (
        "INSERT OR REPLACE INTO stored_events (rowid, originator_id, originator_version, "
        "topic, state) VALUES (1, 'another', 1, 'forged', x'00')",
        "INSERT over a stored row",
    ),
}


@pytest.fixture
def migrated_pg(pg_url: str) -> Iterator[tuple[str, TaskLedger, UUID]]:
    """A migrated PostgreSQL store holding one task with two events and a snapshot."""
    store = StoreConfig.from_url(pg_url)
    migrate(store)
    ledger = TaskLedger(StoreConfig.from_url(pg_url).env())
    try:
        task_id = create_executable(ledger, job("build", "compile"))
        ledger.report(task_id, [start("build", "compile")])
        ledger.take_snapshot(task_id)
        yield pg_url, ledger, task_id
    finally:
        ledger.close()


def pg_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    store = StoreConfig.from_url(url)
    with psycopg.connect(store.conninfo()) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(
            sql.Identifier(store.pg_schema, table)
        )
        return list(conn.execute(query).fetchall())


def pg_execute(
    url: str, statement: str | sql.Composed, params: dict[str, Any] | None = None
) -> None:
    """Runs one statement as the suite's superuser, in the store's schema."""
    store = StoreConfig.from_url(url)
    with psycopg.connect(store.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.pg_schema)))
        conn.execute(statement, params)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", list(REFUSED_ON_POSTGRES))
def test_postgres_refuses_the_change_even_to_a_superuser_and_keeps_the_events(
    migrated_pg: tuple[str, TaskLedger, UUID], change: str
) -> None:
    url, ledger, task_id = migrated_pg
    before = pg_rows(url, "taskledger_events")
    message = f"taskledger_events is append-only: {OPERATION[change]} refused"
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=message):
        pg_execute(url, REFUSED_ON_POSTGRES[change], {"id": task_id})
    assert pg_rows(url, "taskledger_events") == before
    # Normal writes go on.
    ledger.report(task_id, [start("build")])
    assert ledger.get_task(task_id) is not None


def test_postgres_protects_every_event_and_snapshot_table_and_no_other(
    migrated_pg: tuple[str, TaskLedger, UUID],
) -> None:
    url, _, _ = migrated_pg
    schema = StoreConfig.from_url(url).pg_schema
    with psycopg.connect(StoreConfig.from_url(url).conninfo()) as conn:
        tables = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT c.relname, EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid "
                "AND t.tgname = %s) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (TRIGGER, schema),
            ).fetchall()
        }
    event_tables = {t for t in tables if t.endswith(("_events", "_snapshots"))}
    assert {"taskledger_events", "taskledger_snapshots", "steplogs_events"} <= event_tables
    assert {t for t, protected in tables.items() if protected} == event_tables
    assert pg_rows(url, "taskledger_snapshots"), "the fixture stored a snapshot"
    for table in event_tables:
        for statement, operation in (
            ("UPDATE {} SET topic = 'forged'", "UPDATE"),
            ("DELETE FROM {}", "DELETE"),
            ("TRUNCATE {}", "TRUNCATE"),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=operation):
                pg_execute(url, sql.SQL(statement).format(sql.Identifier(table)))
    # Tracking and read-model tables stay writable.
    for table in set(tables) - event_tables:
        pg_execute(url, sql.SQL("DELETE FROM {} WHERE false").format(sql.Identifier(table)))


def trigger_catalogue_pg(url: str) -> list[tuple[Any, ...]]:
    store = StoreConfig.from_url(url)
    with psycopg.connect(store.conninfo()) as conn:
        return list(
            conn.execute(
                "SELECT t.oid, c.relname, t.tgname, t.tgfoid FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT t.tgisinternal "
                "ORDER BY 2, 3",
                (store.pg_schema,),
            ).fetchall()
        )


def test_postgres_migrating_again_or_at_once_changes_nothing(pg_url: str) -> None:
    store = StoreConfig.from_url(pg_url)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(store)
        except BaseException as error:
            errors.append(error)

    starters = [threading.Thread(target=run) for _ in range(3)]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join()
    assert errors == []
    installed = trigger_catalogue_pg(pg_url)
    assert len({name for _, name, _, _ in installed}) == len(installed) >= 3
    migrate(store)
    assert trigger_catalogue_pg(pg_url) == installed


def test_tamper_helper_turns_protection_off_only_inside(
    migrated_pg: tuple[str, TaskLedger, UUID],
) -> None:
    url, _, task_id = migrated_pg
    with tamper(url) as conn:
        conn.execute(
            "UPDATE taskledger_events SET topic = 'forged' "
            "WHERE originator_id = %s AND originator_version = 1",
            (task_id,),
        )
        conn.execute("DELETE FROM taskledger_snapshots")
    topics = {row[1]: row[2] for row in pg_rows(url, "taskledger_events") if row[0] == task_id}
    assert topics[1] == "forged"
    assert pg_rows(url, "taskledger_snapshots") == []
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        pg_execute(url, "UPDATE taskledger_events SET topic = 'again'")


# ---------------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[str, TaskLedger, UUID]]:
    url = f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
    migrate(StoreConfig.from_url(url))
    ledger = TaskLedger(StoreConfig.from_url(url).env())
    try:
        task_id = create_executable(ledger, job("build", "compile"))
        ledger.take_snapshot(task_id)
        yield url, ledger, task_id
    finally:
        ledger.close()


def sqlite_connect(url: str, purpose: str = "tasks") -> sqlite3.Connection:
    path = StoreConfig.from_url(url).env(purpose)["SQLITE_DBNAME"]
    return sqlite3.connect(path, isolation_level=None)


def sqlite_rows(url: str, table: str = "stored_events") -> list[tuple[Any, ...]]:
    with sqlite_connect(url) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


@pytest.mark.parametrize("change", list(REFUSED_ON_SQLITE))
def test_sqlite_refuses_the_change_and_keeps_the_events(
    sqlite_store: tuple[str, TaskLedger, UUID], change: str
) -> None:
    url, ledger, task_id = sqlite_store
    statement, operation = REFUSED_ON_SQLITE[change]
    before = sqlite_rows(url)
    conn = sqlite_connect(url)
    try:
        with pytest.raises(sqlite3.IntegrityError, match=f"append-only: {re.escape(operation)}"):
            conn.execute(statement, {"id": task_id.hex})
    finally:
        conn.close()
    assert sqlite_rows(url) == before
    ledger.report(task_id, [start("build", "compile")])
    after = sqlite_rows(url)
    assert set(before) < set(after)


def test_sqlite_protects_snapshots_and_log_events_but_not_read_models(
    sqlite_store: tuple[str, TaskLedger, UUID],
) -> None:
    url, _, _ = sqlite_store
    snapshots = sqlite_rows(url, "stored_snapshots")
    assert snapshots
    for purpose, table in (("tasks", "stored_snapshots"), ("logs", "stored_events")):
        conn = sqlite_connect(url, purpose)
        try:
            # A plain insert of a new row is how events are stored: it goes through.
            conn.execute(f"INSERT INTO {table} VALUES ('plain', 1, 'topic', x'00')")
            for statement in (
                f"UPDATE {table} SET topic = 'forged'",
                f"DELETE FROM {table}",
                f"INSERT OR REPLACE INTO {table} SELECT * FROM {table}",
            ):
                with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                    conn.execute(statement)
        finally:
            conn.close()
    assert [row for row in sqlite_rows(url, "stored_snapshots") if row[0] != "plain"] == snapshots
    with sqlite_connect(url) as conn:
        read_models = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT IN ('stored_events', 'stored_snapshots')"
            )
        ]
        assert read_models
        for table in read_models:
            conn.execute(f"DELETE FROM {table} WHERE 0")


def test_sqlite_migrating_again_changes_nothing_and_tamper_restores_protection(
    sqlite_store: tuple[str, TaskLedger, UUID],
) -> None:
    url, _, task_id = sqlite_store

    def triggers() -> list[tuple[str, str]]:
        with sqlite_connect(url) as conn:
            return conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
            ).fetchall()

    installed = triggers()
    assert len(installed) == 6  # three on the events, three on the snapshots
    migrate(StoreConfig.from_url(url))
    assert triggers() == installed
    with tamper(url) as conn:
        conn.execute(
            "UPDATE stored_events SET topic = 'forged' WHERE originator_id = ?", (task_id.hex,)
        )
    assert triggers() == installed
    assert {row[2] for row in sqlite_rows(url) if row[0] == task_id.hex} == {"forged"}
