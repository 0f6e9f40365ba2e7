"""Read models that commit their rows and their position together: the exactly-once base.

A view is one of the library's tracking recorders (PostgreSQL or SQLite) with tables
of its own. Its projection writes a *batch* of events through `batch()`, which opens
one transaction, claims the view's tracking row, lets the projection write, records
the batch's last position with the library's `_insert_tracking`, and commits. A crash
anywhere leaves either the whole batch (rows and position) or none of it.

Claiming the tracking row is a compare-and-set: the batch names the position it
starts from (`expected`), the row is locked (`FOR UPDATE` on PostgreSQL; `BEGIN
IMMEDIATE` on SQLite) and compared. A runner that lost its election, or any other
writer that fell behind, gets `PositionConflict` and writes nothing.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking, WaitInterruptedError
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder

from projections.sql import Dialect, PostgresDialect, SQLiteDialect

UPSTREAM = "TaskLedger"  # the application whose events the views follow


class PositionConflict(Exception):
    """Raised when a batch expected the view at one position and found it at another."""

    def __init__(self, expected: int | None, found: int):
        self.expected, self.found = expected, found
        super().__init__(f"view is at position {found}, the batch expected {expected}")


class Progress:
    """The latest position a view has processed, as this process knows it.

    The local runner advances it on every commit (waiters wake at once); when the
    runner works in another process, waiters read the tracking row, a few
    milliseconds apart.
    """

    def __init__(self, read: Any):
        self._read = read
        self._position = 0
        self._read_at = 0.0
        self._changed = threading.Condition()

    @property
    def position(self) -> int:
        return self._position

    def advance(self, position: int) -> None:
        with self._changed:
            if position > self._position:
                self._position = position
                self._changed.notify_all()

    def refresh(self, max_age: float = 0.0) -> int:
        """The position, read from the view unless it was read less than `max_age` ago."""
        if time.monotonic() - self._read_at >= max_age:
            self._read_at = time.monotonic()
            self.advance(self._read())
        return self._position

    def reset(self) -> None:
        with self._changed:
            self._position = 0

    def wait_for(self, position: int, timeout: float) -> bool:
        """Blocks until the view processed `position`; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        interval = 0.002
        while self.refresh(max_age=0.002) < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                if self._position < position:
                    self._changed.wait(min(interval, remaining))
            interval = min(interval * 2, 0.05)
        return True

    async def wait_beyond(self, position: int, timeout: float) -> int:
        """Waits (without holding a thread) until the view passes `position`, or `timeout`."""
        deadline = time.monotonic() + timeout
        while self._position <= position and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if time.monotonic() - self._read_at >= 0.02:
                await asyncio.to_thread(self.refresh, 0.02)
        return self._position


class TrackedView(ABC):
    """What every read model shares, whichever database holds it."""

    dialect: Dialect
    tables: ClassVar[dict[str, str]]  # placeholder → table name
    indexes: ClassVar[dict[str, str]] = {}  # placeholder → index name
    keys: ClassVar[dict[str, str]]  # placeholder → ORDER BY of a full dump
    upstream: str = UPSTREAM

    @abstractmethod
    def ddl(self) -> list[str]:
        """CREATE statements of the view's tables and indexes, in this view's dialect."""

    @abstractmethod
    def writer(self, cursor: Any, streams: Sequence[Any]) -> Any:
        """The object the projection calls inside one batch; its `flush()` writes the rows."""

    @abstractmethod
    def _transaction(self) -> Any:
        """A write transaction (context manager yielding a cursor)."""

    @abstractmethod
    def _reading(self) -> Any:
        """A read-only snapshot (context manager yielding a cursor)."""

    def _recreate(self) -> None:
        """Drops the view's tables and tracking, and creates them again, empty, without
        their secondary indexes."""
        with self._transaction() as cursor:
            for key in (*self.tables, "tracking"):
                cursor.execute(
                    self.dialect.render(f"DROP TABLE IF EXISTS {{{key}}}{self.drop_suffix}")
                )
        # Every concrete view is also the library's tracking recorder (its state, its
        # `create_table`), which this base class does not declare.
        recorder: Any = self
        recorder.tracking_table_exists = False
        recorder.tracking_migration_previous = recorder.tracking_migration_current = None
        # The recorder creates its tables from a list of statements: for once, the list
        # without the secondary indexes.
        every = getattr(self, self.create_statements_attribute)
        indexes = [self.dialect.render(s) for s in self.index_ddl()]
        setattr(self, self.create_statements_attribute, [s for s in every if s not in indexes])
        try:
            recorder.create_table()
        finally:
            setattr(self, self.create_statements_attribute, every)

    lock_suffix = ""
    drop_suffix = ""
    # Where the library's recorder keeps its CREATE statements (the backends differ).
    create_statements_attribute: ClassVar[str]
    indexes_deferred = False  # by `reset()`, until `create_indexes()`

    def index_ddl(self) -> list[str]:
        """The statements of `ddl()` that create secondary indexes."""
        return [s for s in self.ddl() if s.startswith("CREATE INDEX")]

    def _setup(self) -> None:
        self.progress = Progress(lambda: self.max_tracking_id(self.upstream) or 0)  # type: ignore[attr-defined]

    @contextmanager
    def batch(
        self, *, tracking: Tracking, expected: int | None, streams: Sequence[Any] = ()
    ) -> Iterator[Any]:
        """One transaction: the projection's writes for a batch of events, and its position."""
        with self._transaction() as cursor:
            self._claim(cursor, tracking.application_name, expected)
            writer = self.writer(cursor, streams)
            yield writer
            writer.flush()
            self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]
        self.progress.advance(tracking.notification_id)

    def _claim(self, cursor: Any, application_name: str, expected: int | None) -> None:
        render = self.dialect.render
        cursor.execute(
            render(
                "INSERT INTO {tracking} (application_name, notification_id) VALUES (%s, 0) "
                "ON CONFLICT (application_name) DO NOTHING"
            ),
            (application_name,),
        )
        cursor.execute(
            render(
                "SELECT notification_id FROM {tracking} WHERE application_name = %s"
                + self.lock_suffix
            ),
            (application_name,),
        )
        found = _first(cursor.fetchone())
        if expected is not None and found != expected:
            raise PositionConflict(expected, found)

    def position(self) -> int:
        """The last position this view processed (0 before the first)."""
        return self.progress.refresh()

    def wait(
        self,
        application_name: str,
        notification_id: int | None,
        timeout: float = 1.0,
        interrupt: threading.Event | None = None,
    ) -> None:
        """The library's `wait`, without its 100 ms polling floor (see `Progress`)."""
        if application_name != self.upstream:
            super().wait(application_name, notification_id, timeout, interrupt)  # type: ignore[misc]
            return
        deadline = time.monotonic() + timeout
        while notification_id is not None:
            remaining = deadline - time.monotonic()
            if self.progress.wait_for(notification_id, max(0.0, min(remaining, 0.05))):
                return
            if interrupt is not None and interrupt.is_set():
                raise WaitInterruptedError
            if remaining <= 0:
                raise TimeoutError(f"view has not processed position {notification_id} yet")

    def reset(self) -> None:
        """Empties the view and its tracking: the start of a rebuild.

        The secondary indexes come back at `create_indexes()`, once the rebuild has
        filled the tables: an index built at once from the rows costs a fraction of
        one kept up to date row by row.
        """
        self._recreate()
        self.progress.reset()
        self.indexes_deferred = True

    def create_indexes(self) -> None:
        """Creates the view's secondary indexes that do not exist (after a rebuild).

        Only the missing ones are even asked for: `CREATE INDEX IF NOT EXISTS` wants the
        table's owner, and the service may run as a role that owns nothing
        (`tasktrail migrate --grant`), for which every index exists already.
        """
        with self._transaction() as cursor:
            existing = self.dialect.existing_indexes(cursor)
            for statement in self.index_ddl():
                if self.dialect.indexes[_index_key(statement)] not in existing:
                    cursor.execute(self.dialect.render(statement))
        self.indexes_deferred = False

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table, in key order: what rebuild-equivalence compares."""
        with self._reading() as cursor:
            result = {}
            for key, order in self.keys.items():
                cursor.execute(self.dialect.render(f"SELECT * FROM {{{key}}} ORDER BY {order}"))
                result[self.tables[key]] = [dict(row) for row in cursor.fetchall()]
            return result


def _index_key(statement: str) -> str:
    """The placeholder naming the index a `CREATE INDEX IF NOT EXISTS {ix_...}` creates."""
    match = re.match(r"CREATE INDEX IF NOT EXISTS \{(\w+)\}", statement)
    if match is None:
        raise ValueError(f"not an index statement of a view: {statement[:80]}")
    return match.group(1)


def _first(row: Any) -> Any:
    if row is None:
        return None
    return row[0] if not isinstance(row, dict) else next(iter(row.values()))


class PostgresTrackedView(TrackedView, PostgresTrackingRecorder):
    """A view in PostgreSQL, in the store's schema, next to the event table."""

    lock_suffix = " FOR UPDATE"
    drop_suffix = " CASCADE"
    create_statements_attribute = "sql_create_statements"

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        tracking_table_name: str = "notification_tracking",
        **kwargs: Any,
    ):
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self.dialect = PostgresDialect(
            datastore.schema, {**self.tables, "tracking": tracking_table_name}, self.indexes
        )
        self.sql_create_statements.extend(self.dialect.render(s) for s in self.ddl())
        self._setup()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as cursor:
            yield cursor

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            yield cursor


class SQLiteTrackedView(TrackedView, SQLiteTrackingRecorder):
    """A view in the SQLite file of the events (or, for memory://, a file of its own).

    The library's SQLite tracking table has one fixed name; every view here keeps
    its position in a table of its own (`<view>_tracking`).
    """

    tracking_table: ClassVar[str]
    create_statements_attribute = "create_table_statements"

    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any):
        self.dialect = SQLiteDialect({**self.tables, "tracking": self.tracking_table}, self.indexes)
        super().__init__(datastore, **kwargs)
        render = self.dialect.render
        self.insert_tracking_statement = render(
            "INSERT INTO {tracking} VALUES (:application_name, :notification_id) "
            "ON CONFLICT (application_name) DO UPDATE SET notification_id = :notification_id "
            "WHERE {tracking}.notification_id < :notification_id RETURNING notification_id"
        )
        self.select_max_tracking_id_statement = render(
            "SELECT MAX(notification_id) FROM {tracking} WHERE application_name = %s"
        )
        self._setup()

    def construct_create_table_statements(self) -> list[str]:
        tracking = self.dialect.render(
            "CREATE TABLE IF NOT EXISTS {tracking} (application_name TEXT, "
            "notification_id INTEGER, PRIMARY KEY (application_name)) WITHOUT ROWID"
        )
        return [tracking, *(self.dialect.render(s) for s in self.ddl())]

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        # BEGIN IMMEDIATE takes the write lock first (waiting for it under the busy
        # timeout), so a batch never fails half-way on a lock upgrade.
        with self.datastore.get_connection(commit=True) as conn:
            cursor = conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=False) as cursor:
            yield cursor
