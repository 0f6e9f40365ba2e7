"""When the store fails: lost acknowledgements, unknown outcomes, an unreachable server.

A commit whose acknowledgement is lost (the connection drops after COMMIT) is the
classic ambiguous write. The ledger recognises its own events by their command id,
so the command answers success and its events are stored exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from domain.application import TaskLedger, Written
from domain.application_errors import (
    AnswerUnavailableError,
    StoreUnavailableError,
    TaskNotFoundError,
    WriteOutcomeUnknownError,
)
from domain.store_errors import StoreUnreachableError
from store.config import StoreConfig

from .support import (
    ALICE,
    create_executable,
    job,
    queued,
    report,
    run_step,
    start,
    without_durations,
)
from .tcp_proxy import TcpProxy, closed_port

DROPPED = "server closed the connection unexpectedly"


def lose_next_acknowledgement(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch, *, surfaces: str
) -> list[str]:
    """Makes the ledger's next write commit and then fail as if the connection dropped.

    `surfaces` is what the ledger then sees: "integrity error" when the write is
    re-sent and meets its own committed rows (on PostgreSQL the library's own retry
    does that), or "operational error" when the dropped connection is reported as is.
    Returns what happened, in order.
    """
    recorder = ledger.recorder
    insert = recorder.insert_events
    happened: list[str] = []
    armed = [True]

    if surfaces == "integrity error" and isinstance(recorder, PostgresApplicationRecorder):
        datastore = recorder.datastore
        get_connection = datastore.get_connection
        dropping = [False]

        @contextmanager
        def connection_dropping_after_commit() -> Iterator[Any]:
            with get_connection() as conn:
                yield conn
            if dropping[0]:
                dropping[0] = False
                happened.append("committed, connection dropped")
                raise OperationalError(DROPPED)

        monkeypatch.setattr(datastore, "get_connection", connection_dropping_after_commit)

        def insert_events(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
            if armed[0]:
                armed[0], dropping[0] = False, True
            try:
                return insert(stored_events, **kwargs)
            except Exception as error:
                happened.append(type(error).__name__)
                raise

    elif surfaces == "integrity error":

        def insert_events(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
            result = insert(stored_events, **kwargs)
            if armed[0]:
                armed[0] = False
                happened.append("committed, connection dropped")
                try:
                    insert(stored_events, **kwargs)  # re-sent, as a driver retry would
                except Exception as error:
                    happened.append(type(error).__name__)
                    raise
            return result

    else:

        def insert_events(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
            result = insert(stored_events, **kwargs)
            if armed[0]:
                armed[0] = False
                happened.append("committed, connection dropped")
                raise OperationalError(DROPPED)
            return result

    monkeypatch.setattr(recorder, "insert_events", insert_events)
    return happened


def versions(ledger: TaskLedger, stream_id: UUID) -> list[int]:
    return [e.originator_version for e in ledger.events.get(stream_id)]


def types(ledger: TaskLedger, stream_id: UUID) -> list[str]:
    return [type(e).__name__ for e in ledger.events.get(stream_id)]


def expected_happenings(surfaces: str) -> list[str]:
    if surfaces == "operational error":
        return ["committed, connection dropped"]
    return ["committed, connection dropped", "IntegrityError"]


SURFACES = ["integrity error", "operational error"]


@pytest.mark.parametrize("surfaces", SURFACES)
def test_report_whose_acknowledgement_was_lost_succeeds_once(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch, surfaces: str
) -> None:
    task_id = create_executable(ledger, job("build", "compile", "package"))
    before = report(ledger, task_id, queued())
    happened = lose_next_acknowledgement(ledger, monkeypatch, surfaces=surfaces)

    written = report(ledger, task_id, *run_step("build", "compile"))

    assert happened == expected_happenings(surfaces)
    assert written.task["jobs"][0]["steps"][0]["status"] == "done"
    assert written.position is not None and before.position is not None
    assert written.position > before.position
    # Exactly one copy of the command's events, and no retry of the command.
    assert types(ledger, task_id).count("StepStarted") == 1
    assert types(ledger, task_id).count("StepFinished") == 1
    assert versions(ledger, task_id) == list(range(1, written.task["version"] + 1))
    assert without_durations(ledger.get_task(task_id)) == without_durations(written.task)
    assert ledger.conflicts_retried == 0
    # The ledger goes on normally.
    assert report(ledger, task_id, start("build", "package")).position is not None


@pytest.mark.parametrize("surfaces", SURFACES)
def test_create_whose_acknowledgement_was_lost_succeeds_once(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch, surfaces: str
) -> None:
    happened = lose_next_acknowledgement(ledger, monkeypatch, surfaces=surfaces)

    task_id = create_executable(ledger, job("build", "compile"))

    assert happened == expected_happenings(surfaces)
    assert versions(ledger, task_id) == [1]
    assert ledger.get_task(task_id)["status"] == "pending"


@pytest.mark.parametrize("surfaces", SURFACES)
def test_rerun_whose_acknowledgement_was_lost_succeeds_once(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch, surfaces: str
) -> None:
    old_id = create_executable(ledger, job("build", "compile"))
    ledger.cancel(old_id)
    happened = lose_next_acknowledgement(ledger, monkeypatch, surfaces=surfaces)

    new = ledger.rerun(old_id, author=ALICE).task

    assert happened == expected_happenings(surfaces)
    assert new["rerun_of"] == old_id
    assert types(ledger, old_id).count("TaskRerun") == 1
    assert versions(ledger, new["id"]) == [1]
    assert ledger.get_task(old_id)["reruns"] == [new["id"]]


def test_snapshot_due_in_a_write_whose_acknowledgement_was_lost_is_taken(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = [f"s{n:02d}" for n in range(30)]
    task_id = create_executable(ledger, job("build", *steps))
    report(ledger, task_id, queued())
    written: Written | None = None
    for step in steps:
        version = ledger.get_task(task_id)["version"]
        if version + 2 >= 50:  # the next report writes version 50
            break
        written = report(ledger, task_id, *run_step("build", step))
    assert written is not None and written.task["version"] < 50
    lose_next_acknowledgement(ledger, monkeypatch, surfaces="operational error")

    after = report(ledger, task_id, *run_step("build", step))

    assert after.task["version"] >= 50
    assert ledger.snapshots is not None
    assert [s.originator_version for s in ledger.snapshots.get(task_id)] == [50]


def test_write_whose_fate_cannot_be_checked_is_reported_unknown(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = create_executable(ledger, job("build", "compile"))
    lose_next_acknowledgement(ledger, monkeypatch, surfaces="operational error")
    # The store stays unreachable after the lost acknowledgement.
    events_get = ledger.events.get
    unreachable = [False]

    def get(*args: Any, **kwargs: Any) -> Any:
        if unreachable[0]:
            raise OperationalError("connection refused")
        return events_get(*args, **kwargs)

    monkeypatch.setattr(ledger.events, "get", get)
    insert = ledger.recorder.insert_events

    def insert_then_go_away(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        unreachable[0] = True
        return insert(stored_events, **kwargs)

    monkeypatch.setattr(ledger.recorder, "insert_events", insert_then_go_away)

    with pytest.raises(WriteOutcomeUnknownError):
        report(ledger, task_id, queued())

    # It was in fact stored, once.
    unreachable[0] = False
    assert types(ledger, task_id) == ["TaskCreated", "TaskQueued", "JobQueued"]


def test_write_found_stored_whose_position_cannot_be_read_is_never_called_refused(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = create_executable(ledger, job("build", "compile"))
    lose_next_acknowledgement(ledger, monkeypatch, surfaces="operational error")

    def max_notification_id() -> int:
        raise OperationalError("connection refused")

    monkeypatch.setattr(ledger.recorder, "max_notification_id", max_notification_id)

    with pytest.raises(AnswerUnavailableError):
        report(ledger, task_id, queued())
    assert types(ledger, task_id) == ["TaskCreated", "TaskQueued", "JobQueued"]


def test_write_refused_before_commit_is_unavailable_and_stores_nothing(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = create_executable(ledger, job("build", "compile"))

    def insert_events(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(ledger.recorder, "insert_events", insert_events)

    with pytest.raises(StoreUnavailableError) as refused:
        report(ledger, task_id, queued())
    assert not isinstance(refused.value, WriteOutcomeUnknownError)
    with pytest.raises(StoreUnavailableError):
        create_executable(ledger, job("build", "compile"))
    assert types(ledger, task_id) == ["TaskCreated"]


# ---------------------------------------------------------------- PostgreSQL away


@pytest.mark.postgres
def test_a_stored_write_whose_retry_finds_the_store_unreachable_is_not_refused(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commit, drop, then no connection for the recorder's retry: still saved, once.

    The retry's failure to connect says nothing about the first attempt, which did
    commit: the ledger must read back rather than answer "stored nothing".
    """
    ledger = TaskLedger(StoreConfig.from_url(pg_url).env())
    try:
        task_id = create_executable(ledger, job("build", "compile"))
        datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
        get_connection = datastore.get_connection
        insert_events = ledger.recorder.insert_events
        happened: list[str] = []
        writing = [False]

        @contextmanager
        def commit_drop_then_unreachable() -> Iterator[Any]:
            if writing[0] and happened == ["committed, connection dropped"]:
                happened.append("no connection for the retry")
                raise StoreUnreachableError("couldn't get a connection after 3.00 sec")
            with get_connection() as conn:
                yield conn
            if writing[0] and not happened:
                happened.append("committed, connection dropped")
                raise OperationalError(DROPPED)

        def insert_events_once_ambiguously(*args: Any, **kwargs: Any) -> Any:
            writing[0] = True
            try:
                return insert_events(*args, **kwargs)
            finally:
                writing[0] = False

        monkeypatch.setattr(datastore, "get_connection", commit_drop_then_unreachable)
        monkeypatch.setattr(ledger.recorder, "insert_events", insert_events_once_ambiguously)
        written = report(ledger, task_id, queued())
        monkeypatch.undo()

        assert happened == ["committed, connection dropped", "no connection for the retry"]
        assert written.task["status"] == "queued"
        assert types(ledger, task_id).count("JobQueued") == 1, types(ledger, task_id)
        assert versions(ledger, task_id) == list(range(1, written.task["version"] + 1))
    finally:
        ledger.close()


def timed(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    began = time.monotonic()
    try:
        call()
    except BaseException as error:
        return error, time.monotonic() - began
    return None, time.monotonic() - began


@pytest.mark.postgres
def test_ledger_on_an_unreachable_server_fails_fast(pg_url: str) -> None:
    threads = threading.active_count()
    config = replace(StoreConfig.from_url(pg_url), pg_port=closed_port(), pg_connect_timeout=1)

    error, took = timed(lambda: TaskLedger(config.env()))

    assert isinstance(error, StoreUnavailableError), error
    assert took < 5
    # The pool that could not connect was closed, not left retrying in the background.
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == threads


@pytest.mark.postgres
def test_server_going_away_under_a_running_ledger_fails_fast(pg_url: str) -> None:
    config = StoreConfig.from_url(pg_url)
    proxy = TcpProxy(config.pg_host, config.pg_port)
    ledger = TaskLedger(replace(config, pg_port=proxy.port, pg_connect_timeout=1).env())
    try:
        task_id = create_executable(ledger, job("build", "compile"))
        proxy.cut()

        for call in (
            lambda: ledger.get_task(task_id),
            lambda: ledger.timeline(task_id),
            lambda: report(ledger, task_id, queued()),
            lambda: create_executable(ledger, job("build", "compile")),
            lambda: ledger.find_key("tt_whatever"),
        ):
            error, took = timed(call)
            assert isinstance(error, StoreUnavailableError), error
            assert took < 5
    finally:
        ledger.close()
    # Nothing was stored meanwhile (checked on a direct connection).
    reader = TaskLedger(config.env())
    try:
        assert versions(reader, task_id) == [1]
        with pytest.raises(TaskNotFoundError):
            reader.get_task(UUID(int=0))
    finally:
        reader.close()


@pytest.mark.postgres
def test_closing_the_ledger_releases_its_connections(pg_url: str) -> None:
    config = StoreConfig.from_url(pg_url)
    ledger = TaskLedger(config.env())
    pool = ledger.factory.datastore.pool  # type: ignore[attr-defined]
    # Use several connections at once, so the pool grows past its minimum.
    barrier = threading.Barrier(6)
    pids: set[int] = set()

    def use_a_connection() -> None:
        with pool.connection() as conn:
            pids.add(conn.info.backend_pid)
            barrier.wait(timeout=10)

    workers = [threading.Thread(target=use_a_connection) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    create_executable(ledger, job("build", "compile"))
    assert len(pids) == 6

    ledger.close()

    # A backend leaves pg_stat_activity a moment after its client hangs up: poll briefly.
    with psycopg.connect(config.conninfo(), autocommit=True) as admin:
        for _ in range(50):
            still_there = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)
            ).fetchone()
            if still_there == (0,):
                break
            time.sleep(0.05)
    assert still_there == (0,)
