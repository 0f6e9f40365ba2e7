"""The deadline index in SQL: one schema, two dialects (PostgreSQL and SQLite).

One small row per running task and an index on `deadline`, the order of the one
read (`due`). A batch changes its tasks' rows in memory and writes each changed row
once at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from domain.task import deadline_of
from projections.deadlines import DeadlineView
from projections.tracked_view import PostgresTrackedView, SQLiteTrackedView, _first

UPSERT = (
    "INSERT INTO {deadlines} (task_id, timeout_seconds, deadline) VALUES (%s, %s, %s) "
    "ON CONFLICT (task_id) DO UPDATE SET timeout_seconds = excluded.timeout_seconds, "
    "deadline = excluded.deadline"
)
TABLE_TYPES = {
    "postgres": {"uuid": "uuid", "time": "timestamptz"},
    "sqlite": {"uuid": "TEXT", "time": "TEXT"},
}


class SqlDeadlines(DeadlineView):
    """The deadline index's statements, shared by both dialects."""

    tables: ClassVar[dict[str, str]] = {"deadlines": "deadlines"}
    indexes: ClassVar[dict[str, str]] = {"ix_deadline": "deadlines_by_deadline"}
    keys: ClassVar[dict[str, str]] = {"deadlines": "task_id"}
    tracking_table = "deadlines_tracking"

    def ddl(self) -> list[str]:
        types = TABLE_TYPES[self.dialect.name]
        return [
            "CREATE TABLE IF NOT EXISTS {deadlines} ("
            f"task_id {types['uuid']} PRIMARY KEY, timeout_seconds INTEGER NOT NULL, "
            f"deadline {types['time']})",
            "CREATE INDEX IF NOT EXISTS {ix_deadline} ON {deadlines} (deadline)"
            " WHERE deadline IS NOT NULL",
        ]

    def writer(self, cursor: Any, streams: Sequence[Any]) -> DeadlineBatch:
        return DeadlineBatch(self, cursor, streams)

    def due(self, now: datetime, limit: int = 100) -> list[UUID]:
        d = self.dialect
        with self._reading() as cursor:
            cursor.execute(
                d.render(
                    "SELECT task_id FROM {deadlines} WHERE deadline IS NOT NULL "
                    "AND deadline <= %s ORDER BY deadline, task_id LIMIT %s"
                ),
                (d.time(now), limit),
            )
            return [d.read_uuid(_first(row)) for row in cursor.fetchall()]  # type: ignore[misc]

    def deadline(self, task_id: UUID) -> datetime | None:
        d = self.dialect
        with self._reading() as cursor:
            cursor.execute(
                d.render("SELECT deadline FROM {deadlines} WHERE task_id = %s"), (d.uuid(task_id),)
            )
            row = cursor.fetchone()
            return None if row is None else d.read_time(_first(row))


class DeadlineBatch:
    """One batch's changes to the deadline index, made in memory and written at `flush()`.

    The rows of the batch's tasks are read once (one query per 500 tasks); then one
    pipelined upsert per changed row and one delete per finished task: a batch costs
    a few round trips, not three statements per task.
    """

    def __init__(self, view: SqlDeadlines, cursor: Any, streams: Sequence[Any]):
        self.cursor, self.dialect = cursor, view.dialect
        # task → [timeout_seconds, deadline]; None once the row is gone.
        self.rows: dict[UUID, list[Any] | None] = {}
        self.stored: set[UUID] = set()  # tasks that had a row before the batch
        self.changed: set[UUID] = set()
        self._load([s for s in streams if isinstance(s, UUID)])

    def _load(self, ids: list[UUID]) -> None:
        d = self.dialect
        statement = (
            "SELECT task_id, timeout_seconds, deadline FROM {deadlines} WHERE task_id IN ({ids})"
        )
        for row in d.rows_for_ids(self.cursor, statement, ids):
            task_id = d.read_uuid(row["task_id"])
            assert task_id is not None
            self.rows[task_id] = [row["timeout_seconds"], d.read_time(row["deadline"])]
            self.stored.add(task_id)

    def add(self, task_id: UUID, timeout_seconds: int) -> None:
        if self.rows.get(task_id) is None:
            self.rows[task_id] = [timeout_seconds, None]
            self.changed.add(task_id)

    def start(self, task_id: UUID, started_at: datetime) -> None:
        row = self.rows.get(task_id)
        if row is None:  # finished, or never had a timeout
            return
        row[1] = deadline_of(started_at, row[0])
        self.changed.add(task_id)

    def remove(self, task_id: UUID) -> None:
        self.rows[task_id] = None
        self.changed.add(task_id)

    def flush(self) -> None:
        d = self.dialect
        gone = [(d.uuid(i),) for i in self.changed if self.rows[i] is None and i in self.stored]
        if gone:
            self.cursor.executemany(d.render("DELETE FROM {deadlines} WHERE task_id = %s"), gone)
        kept = [
            (d.uuid(i), row[0], d.time(row[1]))
            for i in self.changed
            if (row := self.rows[i]) is not None
        ]
        if kept:
            self.cursor.executemany(d.render(UPSERT), kept)


class PostgresDeadlines(SqlDeadlines, PostgresTrackedView):
    """The deadline index in PostgreSQL."""


class SQLiteDeadlines(SqlDeadlines, SQLiteTrackedView):
    """The deadline index in SQLite (also the memory store's, in a file of its own)."""
