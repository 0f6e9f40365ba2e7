"""The org event index in SQL: one schema, two dialects (PostgreSQL and SQLite).

Indexes follow the reads: an org's events in position order, narrowed by task or
by event type. Entries are stored as JSON text (`json`, not `jsonb`, on
PostgreSQL) so a feed, a stream or an export hands them on exactly as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from uuid import UUID

from projections.event_feed import FeedRow, OrgEventView, Stream
from projections.tracked_view import PostgresTrackedView, SQLiteTrackedView

TABLE_TYPES = {
    "postgres": {"uuid": "uuid", "json": "json", "bool": "boolean"},
    "sqlite": {"uuid": "TEXT", "json": "TEXT", "bool": "INTEGER"},
}
EVENT_COLUMNS = ("position", "org", "stream_id", "task_id", "version", "type", "is_system", "entry")
STREAM_COLUMNS = ("stream_id", "org", "shape")


class SqlEventFeed(OrgEventView):
    """The event index's statements, shared by both dialects."""

    tables: ClassVar[dict[str, str]] = {
        "events": "event_feed",
        "streams": "event_feed_streams",
    }
    indexes: ClassVar[dict[str, str]] = {
        "ix_org": "event_feed_by_org",
        "ix_task": "event_feed_by_task",
        "ix_type": "event_feed_by_type",
    }
    keys: ClassVar[dict[str, str]] = {"events": "position", "streams": "stream_id"}
    tracking_table = "event_feed_tracking"

    def ddl(self) -> list[str]:
        types = TABLE_TYPES[self.dialect.name]
        uuid, json, boolean = types["uuid"], types["json"], types["bool"]
        return [
            "CREATE TABLE IF NOT EXISTS {events} ("
            f"position BIGINT PRIMARY KEY, org TEXT NOT NULL, stream_id {uuid} NOT NULL, "
            f"task_id {uuid}, version INTEGER NOT NULL, type TEXT NOT NULL, "
            f"is_system {boolean} NOT NULL, entry {json} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {streams} ("
            f"stream_id {uuid} PRIMARY KEY, org TEXT NOT NULL, shape {json} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {ix_org} ON {events} (org, position)",
            "CREATE INDEX IF NOT EXISTS {ix_task} ON {events} (org, task_id, position)",
            "CREATE INDEX IF NOT EXISTS {ix_type} ON {events} (org, type, position)",
        ]

    def writer(self, cursor: Any, streams: Sequence[Any]) -> EventFeedBatch:
        return EventFeedBatch(self, cursor, streams)

    def events(
        self,
        org: str,
        *,
        after: int = 0,
        until: int | None = None,
        limit: int = 100,
        task_id: UUID | None = None,
        type: str | None = None,
        include_system: bool = False,
    ) -> list[FeedRow]:
        d = self.dialect
        where, params = ["e.org = %s", "e.position > %s"], [org, after]
        if until is not None:
            where.append("e.position <= %s")
            params.append(until)
        if task_id is not None:
            where.append("e.task_id = %s")
            params.append(d.uuid(task_id))
        if type is not None:
            where.append("e.type = %s")
            params.append(type)
        # As written: PostgreSQL's json type would otherwise be parsed by the driver.
        entry = "e.entry::text" if d.name == "postgres" else "e.entry"
        if include_system:
            text = f"SELECT e.position, {entry} AS entry, NULL AS shape FROM {{events}} e"
        else:
            where.append("NOT e.is_system")
            text = (
                f"SELECT e.position, {entry} AS entry, s.shape FROM {{events}} e"
                " JOIN {streams} s ON s.stream_id = e.stream_id"
            )
        text += f" WHERE {' AND '.join(where)} ORDER BY e.position LIMIT %s"
        with self._reading() as cursor:
            cursor.execute(d.render(text), (*params, limit))
            return [
                FeedRow(
                    row["position"],
                    row["entry"],
                    None if row["shape"] is None else d.read_json(row["shape"]),
                )
                for row in cursor.fetchall()
            ]


class EventFeedBatch:
    """One batch's new feed rows (and new streams), written at `flush()`."""

    def __init__(self, view: SqlEventFeed, cursor: Any, streams: Sequence[Any]):
        self.view, self.cursor, self.dialect = view, cursor, view.dialect
        self.streams: dict[UUID, Stream] = {}
        self.new_streams: list[UUID] = []
        self.rows: list[tuple[Any, ...]] = []
        self._load([s for s in streams if isinstance(s, UUID)])

    def _load(self, ids: list[UUID]) -> None:
        d = self.dialect
        statement = "SELECT stream_id, org, shape FROM {streams} WHERE stream_id IN ({ids})"
        for row in d.rows_for_ids(self.cursor, statement, ids):
            self.streams[d.read_uuid(row["stream_id"])] = Stream(  # type: ignore[index]
                row["org"], d.read_json(row["shape"])
            )

    def open_stream(self, stream_id: UUID, stream: Stream, first: dict[str, Any]) -> None:
        if stream_id not in self.streams:
            self.streams[stream_id] = stream
            self.new_streams.append(stream_id)
        self.append(stream_id, first, is_system=False)

    def stream(self, stream_id: UUID) -> Stream:
        try:
            return self.streams[stream_id]
        except KeyError:
            raise LookupError(f"event index has no stream {stream_id}") from None

    def append(self, stream_id: UUID, entry: dict[str, Any], *, is_system: bool) -> None:
        d = self.dialect
        stream = d.uuid(stream_id)
        self.rows.append(
            (
                entry["position"],
                self.stream(stream_id).org,
                stream,
                None if entry["task_id"] is None else stream,  # a task's stream is the task
                entry["version"],
                entry["type"],
                d.flag(is_system),
                d.json(entry),
            )
        )

    def flush(self) -> None:
        d = self.dialect
        if self.new_streams:
            streams = [
                (d.uuid(i), self.streams[i].org, d.json(self.streams[i].shape))
                for i in self.new_streams
            ]
            d.insert_many(self.cursor, "streams", STREAM_COLUMNS, streams)
        if self.rows:
            d.insert_many(self.cursor, "events", EVENT_COLUMNS, self.rows)


class PostgresEventFeed(SqlEventFeed, PostgresTrackedView):
    """The event index in PostgreSQL."""


class SQLiteEventFeed(SqlEventFeed, SQLiteTrackedView):
    """The event index in SQLite (also the memory store's, in a file of its own)."""
