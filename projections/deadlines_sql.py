"""The deadline index in SQL: one schema, two dialects (PostgreSQL and SQLite).

One small row per running task and an index on `deadline`, the order of the one
read (`due`). Three statements per task in its whole life (add, start, remove), so
the batch writes them as they come, in the batch's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from domain.task import deadline_of
from projections.deadlines import DeadlineView
from projections.tracked_view import PostgresTrackedView, SQLiteTrackedView, _first

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
        return DeadlineBatch(self, cursor)

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
    """One batch's changes to the deadline index, written as they come."""

    def __init__(self, view: SqlDeadlines, cursor: Any):
        self.cursor, self.dialect = cursor, view.dialect

    def add(self, task_id: UUID, timeout_seconds: int) -> None:
        d = self.dialect
        self.cursor.execute(
            d.render(
                "INSERT INTO {deadlines} (task_id, timeout_seconds) VALUES (%s, %s) "
                "ON CONFLICT (task_id) DO NOTHING"
            ),
            (d.uuid(task_id), timeout_seconds),
        )

    def start(self, task_id: UUID, started_at: datetime) -> None:
        d = self.dialect
        self.cursor.execute(
            d.render("SELECT timeout_seconds FROM {deadlines} WHERE task_id = %s"),
            (d.uuid(task_id),),
        )
        row = self.cursor.fetchone()
        if row is None:  # finished, or never had a timeout
            return
        deadline = deadline_of(started_at, int(_first(row)))
        self.cursor.execute(
            d.render("UPDATE {deadlines} SET deadline = %s WHERE task_id = %s"),
            (d.time(deadline), d.uuid(task_id)),
        )

    def remove(self, task_id: UUID) -> None:
        d = self.dialect
        self.cursor.execute(
            d.render("DELETE FROM {deadlines} WHERE task_id = %s"), (d.uuid(task_id),)
        )

    def flush(self) -> None:
        """Everything was written as it came."""


class PostgresDeadlines(SqlDeadlines, PostgresTrackedView):
    """The deadline index in PostgreSQL."""


class SQLiteDeadlines(SqlDeadlines, SQLiteTrackedView):
    """The deadline index in SQLite (also the memory store's, in a file of its own)."""
