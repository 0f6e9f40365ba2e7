"""The latest stored event of many log streams, in one query (a live read).

A task's view shows each step's log totals, and every log event carries its log's
running totals: so one query for the heads of all the task's step logs answers for
all of them, instead of one read per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg import sql


def latest_events(recorder: Any, stream_ids: Sequence[UUID]) -> dict[UUID, StoredEvent]:
    """Each stream's last stored event (streams without events are left out)."""
    if not stream_ids:
        return {}
    if isinstance(recorder, PostgresApplicationRecorder):
        return _postgres(recorder, stream_ids)
    if isinstance(recorder, SQLiteApplicationRecorder):
        return _sqlite(recorder, stream_ids)
    if isinstance(recorder, POPOApplicationRecorder):
        return _memory(recorder, stream_ids)
    raise TypeError(f"no head lookup for {type(recorder).__name__}")


def _stored(originator_id: UUID, row: Any) -> StoredEvent:
    return StoredEvent(
        originator_id=originator_id,
        originator_version=row[1],
        topic=row[2],
        state=bytes(row[3]),
    )


def _postgres(
    recorder: PostgresApplicationRecorder, ids: Sequence[UUID]
) -> dict[UUID, StoredEvent]:
    query = sql.SQL(
        "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state "
        "FROM {schema}.{table} WHERE originator_id = ANY(%s) "
        "ORDER BY originator_id, originator_version DESC"
    ).format(
        schema=sql.Identifier(recorder.datastore.schema),
        table=sql.Identifier(recorder.events_table_name),
    )
    with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
        cursor.execute(query, (list(ids),))
        rows = cursor.fetchall()
    return {
        row["originator_id"]: _stored(
            row["originator_id"],
            (None, row["originator_version"], row["topic"], row["state"]),
        )
        for row in rows
    }


def _sqlite(recorder: SQLiteApplicationRecorder, ids: Sequence[UUID]) -> dict[UUID, StoredEvent]:
    marks = ",".join("?" * len(ids))
    # SQLite returns the other columns of the row that holds the MAX (documented).
    query = (
        "SELECT originator_id, MAX(originator_version), topic, state "
        f"FROM {recorder.events_table_name} WHERE originator_id IN ({marks}) "
        "GROUP BY originator_id"
    )
    by_hex = {i.hex: i for i in ids}
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(query, [i.hex for i in ids])
        rows = cursor.fetchall()
    return {by_hex[row[0]]: _stored(by_hex[row[0]], row) for row in rows}


def _memory(recorder: POPOApplicationRecorder, ids: Sequence[UUID]) -> dict[UUID, StoredEvent]:
    heads = {}
    with recorder._database_lock:
        for stream_id in ids:
            index = recorder._stored_events_index.get(str(stream_id))
            if index:
                heads[stream_id] = recorder._stored_events[index[max(index)]]
    return heads
