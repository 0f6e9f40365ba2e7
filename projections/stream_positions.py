"""Global positions of one stream's events, read live from the event table.

The library's `select_events` returns stored events without their notification id;
timelines and write answers need it. This is a *live* read (no read model): one
indexed lookup by stream id against whichever recorder the application uses.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg import sql


def stream_positions(
    recorder: Any, stream_id: UUID, *, after_version: int = 0, limit: int | None = None
) -> dict[int, int]:
    """Maps each version of the stream after `after_version` to its global position."""
    if isinstance(recorder, PostgresApplicationRecorder):
        return _postgres(recorder, stream_id, after_version, limit)
    if isinstance(recorder, SQLiteApplicationRecorder):
        return _sqlite(recorder, stream_id, after_version, limit)
    if isinstance(recorder, POPOApplicationRecorder):
        return _memory(recorder, stream_id, after_version, limit)
    raise TypeError(f"no position lookup for {type(recorder).__name__}")


def last_position(recorder: Any, stream_id: UUID) -> int | None:
    """The global position of the stream's latest event (two indexed one-row reads)."""
    latest = recorder.select_events(stream_id, desc=True, limit=1)
    if not latest:
        return None
    version = latest[0].originator_version
    return stream_positions(recorder, stream_id, after_version=version - 1, limit=1).get(version)


def _postgres(
    recorder: PostgresApplicationRecorder, stream_id: UUID, after: int, limit: int | None
) -> dict[int, int]:
    query = sql.SQL(
        "SELECT originator_version, notification_id FROM {schema}.{table} "
        "WHERE originator_id = %s AND originator_version > %s "
        "ORDER BY originator_version LIMIT %s"
    ).format(
        schema=sql.Identifier(recorder.datastore.schema),
        table=sql.Identifier(recorder.events_table_name),
    )
    with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
        cursor.execute(query, (stream_id, after, limit))
        return {row["originator_version"]: row["notification_id"] for row in cursor.fetchall()}


def _sqlite(
    recorder: SQLiteApplicationRecorder, stream_id: UUID, after: int, limit: int | None
) -> dict[int, int]:
    query = (
        f"SELECT originator_version, rowid FROM {recorder.events_table_name} "
        "WHERE originator_id = ? AND originator_version > ? ORDER BY originator_version LIMIT ?"
    )
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(query, (stream_id.hex, after, -1 if limit is None else limit))
        return {row[0]: row[1] for row in cursor.fetchall()}


def _memory(
    recorder: POPOApplicationRecorder, stream_id: UUID, after: int, limit: int | None
) -> dict[int, int]:
    with recorder._database_lock:
        index = recorder._stored_events_index.get(str(stream_id), {})
        versions = sorted(v for v in index if v > after)[:limit]
        return {v: index[v] + 1 for v in versions}
