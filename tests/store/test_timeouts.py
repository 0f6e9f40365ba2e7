"""A write that cannot get the event table or a connection fails within seconds, not never."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from api.migrate import migrate
from domain.application import TaskLedger
from domain.application_errors import StoreUnavailableError
from store.config import StoreConfig
from tests.application.support import create_executable, job, start

# What "within a few seconds" means here: the lock timeout is 3 s (the URL default),
# a failed write then asks the store once whether it was stored; slack for a busy CI.
FAILS_WITHIN_SECONDS = 8.0


@pytest.fixture
def migrated_url(pg_url: str) -> str:
    migrate(StoreConfig.from_url(pg_url))
    return pg_url


@pytest.fixture
def ledger_pg(migrated_url: str) -> Iterator[TaskLedger]:
    ledger = TaskLedger(StoreConfig.from_url(migrated_url).env())
    try:
        yield ledger
    finally:
        ledger.close()


def hold_lock(store: StoreConfig, mode: str) -> psycopg.Connection:
    """A connection holding a lock on the task event table, as a stuck session would."""
    holder = psycopg.connect(store.conninfo())
    holder.execute(
        sql.SQL("LOCK TABLE {} IN {} MODE").format(
            sql.Identifier(store.pg_schema, "taskledger_events"), sql.SQL(mode)
        )
    )
    return holder


def test_a_write_behind_a_held_table_lock_fails_within_seconds_by_default(
    migrated_url: str, ledger_pg: TaskLedger
) -> None:
    task_id = create_executable(ledger_pg, job("build", "compile"))
    # EXCLUSIVE is what a writer stuck inside its transaction holds.
    with hold_lock(StoreConfig.from_url(migrated_url), "EXCLUSIVE") as holder:
        began = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            ledger_pg.report(task_id, [start("build", "compile")])
        elapsed = time.monotonic() - began
        holder.rollback()
    assert elapsed < FAILS_WITHIN_SECONDS, f"took {elapsed:.1f} s"
    # Nothing was stored meanwhile, and the store works again at once.
    assert ledger_pg.get_task(task_id)["version"] == 1
    ledger_pg.report(task_id, [start("build", "compile")])


def test_reads_and_writes_behind_an_operators_lock_fail_after_the_urls_lock_timeout(
    migrated_url: str,
) -> None:
    url = f"{migrated_url}&lock_timeout=1"
    ledger = TaskLedger(StoreConfig.from_url(url).env())
    try:
        task_id = create_executable(ledger, job("build", "compile"))
        # A plain LOCK TABLE (or DDL) takes ACCESS EXCLUSIVE: it blocks reads too.
        with hold_lock(StoreConfig.from_url(url), "ACCESS EXCLUSIVE") as holder:
            timings = []
            for write in (
                lambda: ledger.report(task_id, [start("build", "compile")]),
                lambda: create_executable(ledger, job("deploy", "rollout")),
                lambda: ledger.get_task(task_id),
            ):
                began = time.monotonic()
                with pytest.raises(StoreUnavailableError):
                    write()
                timings.append(time.monotonic() - began)
            holder.rollback()
        ledger.report(task_id, [start("build", "compile")])
    finally:
        ledger.close()
    # At most two lock waits each (the write, then the check whether it was stored).
    assert all(0.9 < t < 3.0 for t in timings), timings


def test_a_write_finding_the_pool_exhausted_fails_within_seconds(migrated_url: str) -> None:
    url = f"{migrated_url}&pool_size=1&max_overflow=0&connect_timeout=1"
    ledger = TaskLedger(StoreConfig.from_url(url).env())
    try:
        task_id = create_executable(ledger, job("build", "compile"))
        datastore = ledger.factory.datastore  # type: ignore[attr-defined]
        with datastore.get_connection():  # the pool's only connection, held
            began = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                ledger.report(task_id, [start("build", "compile")])
            elapsed = time.monotonic() - began
        ledger.report(task_id, [start("build", "compile")])
    finally:
        ledger.close()
    assert elapsed < 4.0, f"took {elapsed:.1f} s with connect_timeout=1"


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("lock_timeout=0", "lock_timeout must be a whole number, at least 1"),
        ("pool_size=two", "pool_size must be a whole number"),
        ("max_waiting=-1", "max_waiting must be a whole number"),
        ("connect_timeout=1.5", "connect_timeout must be a whole number"),
    ],
)
def test_a_bad_timeout_or_pool_option_is_refused_by_name(query: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        StoreConfig.from_url(f"postgresql://postgres@127.0.0.1/test?{query}")


def test_url_options_reach_the_library() -> None:
    env = StoreConfig.from_url(
        "postgresql://u@h/db?lock_timeout=7&pool_size=3&max_overflow=4&max_waiting=5"
    ).env()
    assert (
        env["POSTGRES_LOCK_TIMEOUT"],
        env["POSTGRES_POOL_SIZE"],
        env["POSTGRES_MAX_OVERFLOW"],
        env["POSTGRES_MAX_WAITING"],
    ) == ("7", "3", "4", "5")
    defaults = StoreConfig.from_url("postgresql://u@h/db").env()
    assert defaults["POSTGRES_LOCK_TIMEOUT"] == "3"
    assert defaults["POSTGRES_CONNECT_TIMEOUT"] == "3"
