"""Pooled connections dropped by the server: the next request still gets its answer.

The pool checks a connection only when it sat idle (`store.config._check_if_idle`),
not on every checkout; these tests drop the ledger's connections server-side (as a
restart or an idle timeout on the way would) and read again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from domain.application import TaskLedger
from projections.stream_positions import stream_positions
from store.config import PING_AFTER_IDLE_SECONDS, StoreConfig
from tests.application.support import create_executable, job
from tests.conftest import admin_connect

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_ledger(pg_url: str) -> Iterator[TaskLedger]:
    ledger = TaskLedger(StoreConfig.from_url(pg_url).env())
    try:
        yield ledger
    finally:
        ledger.close()


def _drop_connections(ledger: TaskLedger) -> int:
    """Terminates every connection the ledger's pool holds; how many it dropped."""
    pool = ledger.factory.datastore.pool  # type: ignore[attr-defined]
    pids = []
    for _ in range(pool.get_stats()["pool_available"]):
        with pool.connection() as conn:
            pids.append(conn.info.backend_pid)
    with admin_connect() as admin:
        for pid in set(pids):
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return len(set(pids))


def test_a_connection_dropped_while_idle_is_replaced_before_a_query(
    pg_ledger: TaskLedger,
) -> None:
    task_id = create_executable(pg_ledger, job("build", "compile"))
    assert _drop_connections(pg_ledger) >= 1
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)

    # A query of our own, which the library does not retry, gets a live connection.
    assert stream_positions(pg_ledger.recorder, task_id, after_version=0, limit=1)
    assert pg_ledger.get_task(task_id)["version"] == 1


def test_a_connection_dropped_while_in_use_costs_a_read_nothing(pg_ledger: TaskLedger) -> None:
    task_id = create_executable(pg_ledger, job("build", "compile"))
    assert _drop_connections(pg_ledger) >= 1

    # Not idle long enough to be checked: the library retries the read on another.
    assert pg_ledger.get_task(task_id)["version"] == 1
    assert pg_ledger.timeline(task_id)[0]["type"] == "TaskCreated"
