"""The chain heads in SQL: one schema, two dialects (PostgreSQL and SQLite).

One row per task. A batch keeps only each task's last event and writes them at the
end with one upsert each (`executemany`): a task reported twenty times in a batch
costs one row write. The org is written when the task is created and never
changed. An index on (org, position) serves both reads: each org's latest
position, and an org's heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from uuid import UUID

from domain.checkpoints import ChainHead
from projections.chain_heads import ChainHeadView
from projections.tracked_view import PostgresTrackedView, SQLiteTrackedView

TABLE_TYPES = {"postgres": {"uuid": "uuid"}, "sqlite": {"uuid": "TEXT"}}
UPSERT = (
    "INSERT INTO {heads} (task_id, org, version, hash, position) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (task_id) DO UPDATE SET version = excluded.version, hash = excluded.hash, "
    "position = excluded.position"
)


class SqlChainHeads(ChainHeadView):
    """The chain heads' statements, shared by both dialects."""

    tables: ClassVar[dict[str, str]] = {"heads": "chain_heads"}
    indexes: ClassVar[dict[str, str]] = {"ix_org": "chain_heads_by_org"}
    keys: ClassVar[dict[str, str]] = {"heads": "task_id"}
    tracking_table = "chain_heads_tracking"

    def ddl(self) -> list[str]:
        uuid = TABLE_TYPES[self.dialect.name]["uuid"]
        return [
            "CREATE TABLE IF NOT EXISTS {heads} ("
            f"task_id {uuid} PRIMARY KEY, org TEXT NOT NULL, version INTEGER NOT NULL, "
            "hash TEXT NOT NULL, position BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {ix_org} ON {heads} (org, position)",
        ]

    def writer(self, cursor: Any, streams: Sequence[Any]) -> ChainHeadBatch:
        return ChainHeadBatch(self, cursor)

    def latest_positions(self) -> dict[str, int]:
        with self._reading() as cursor:
            cursor.execute(
                self.dialect.render("SELECT org, MAX(position) FROM {heads} GROUP BY org")
            )
            return {str(_at(row, 0)): int(_at(row, 1)) for row in cursor.fetchall()}

    def heads(self, org: str) -> list[ChainHead]:
        d = self.dialect
        with self._reading() as cursor:
            # One statement: one snapshot, so the heads are those of one committed batch.
            cursor.execute(
                d.render(
                    "SELECT task_id, version, hash, position FROM {heads} WHERE org = %s "
                    "ORDER BY task_id"
                ),
                (org,),
            )
            return [
                ChainHead(
                    str(d.read_uuid(_at(row, 0))), int(_at(row, 1)), _at(row, 2), int(_at(row, 3))
                )
                for row in cursor.fetchall()
            ]


class ChainHeadBatch:
    """One batch's heads: the last event of each task, written by `flush()`."""

    def __init__(self, view: SqlChainHeads, cursor: Any):
        self.cursor, self.dialect = cursor, view.dialect
        self._heads: dict[UUID, list[Any]] = {}

    def advance(
        self, task_id: UUID, version: int, hash: str, position: int, *, org: str | None = None
    ) -> None:
        known = self._heads.get(task_id)
        # The org comes with the task's creation; a later event in the batch keeps it.
        # Outside the batch the row exists already, and an upsert never changes org.
        kept_org = org if org is not None else (known[1] if known else "")
        self._heads[task_id] = [self.dialect.uuid(task_id), kept_org, version, hash, position]

    def flush(self) -> None:
        if self._heads:
            self.cursor.executemany(self.dialect.render(UPSERT), list(self._heads.values()))


def _at(row: Any, index: int) -> Any:
    return list(row.values())[index] if isinstance(row, dict) else row[index]


class PostgresChainHeads(SqlChainHeads, PostgresTrackedView):
    """The chain heads in PostgreSQL."""


class SQLiteChainHeads(SqlChainHeads, SQLiteTrackedView):
    """The chain heads in SQLite (also the memory store's, in a file of its own)."""
