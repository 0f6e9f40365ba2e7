"""One SQL text, two dialects: how read models speak to PostgreSQL and SQLite.

Statements are written once, with `{name}` placeholders for tables (and indexes)
and `%s` for values. PostgreSQL renders the names as schema-qualified
`psycopg.sql.Identifier`s; SQLite as quoted names with `?` parameters. Values are
always parameters, never formatted into the text.

Each dialect also encodes values for its column types: PostgreSQL takes UUIDs,
aware datetimes and booleans as they are; SQLite keeps UUIDs and times as text
(times in one fixed-width UTC form, so text order is time order). JSON goes in as
text in both. Bulk inserts use COPY on PostgreSQL, `executemany` on SQLite.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any
from uuid import UUID

import orjson
from psycopg import sql

SQLITE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# Ids per `IN (...)` list: both databases cap the parameters of one statement.
IN_LIST_CHUNK = 500


def dumps(value: Any) -> str:
    """Compact JSON text, with times in RFC 3339 (`...Z`) and UUIDs as text.

    orjson writes times exactly as pydantic does, so an entry stored here reads the
    same as one a response model serialises; and it is several times faster than the
    standard library, which matters when a rebuild serialises millions of events.
    """
    return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()


class Dialect(ABC):
    """Renders statement text and encodes/decodes values for one database."""

    name: str

    def __init__(self, tables: dict[str, str], indexes: dict[str, str] | None = None):
        self.tables = tables
        self.indexes = indexes or {}

    @abstractmethod
    def render(self, text: str) -> Any:
        """The statement, ready for the driver's `execute`."""

    @abstractmethod
    def existing_indexes(self, cursor: Any) -> set[str]:
        """The names of the indexes the view's schema (or database) has."""

    @abstractmethod
    def uuid(self, value: UUID | None) -> Any: ...

    @abstractmethod
    def time(self, value: datetime | None) -> Any: ...

    def json(self, value: Any) -> Any:
        """A JSON column value: JSON text (both databases parse it on the way in)."""
        return None if value is None else dumps(value)

    @abstractmethod
    def insert_many(self, cursor: Any, table: str, columns: Sequence[str], rows: list[Any]) -> None:
        """Inserts rows (already encoded) into a table, as fast as the database allows."""

    @abstractmethod
    def read_uuid(self, value: Any) -> UUID | None: ...

    @abstractmethod
    def read_time(self, value: Any) -> datetime | None: ...

    @abstractmethod
    def read_json(self, value: Any) -> Any: ...

    def flag(self, value: bool) -> Any:
        return value

    def rows_for_ids(self, cursor: Any, statement: str, ids: Sequence[UUID]) -> Iterator[Any]:
        """The rows of `statement`, whose `{ids}` stands for an `IN` list, for all `ids`
        (asked `IN_LIST_CHUNK` at a time)."""
        for start in range(0, len(ids), IN_LIST_CHUNK):
            chunk = ids[start : start + IN_LIST_CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                self.render(statement.replace("{ids}", marks)),
                tuple(self.uuid(i) for i in chunk),
            )
            yield from cursor.fetchall()

    def read_flag(self, value: Any) -> bool:
        return bool(value)


class PostgresDialect(Dialect):
    name = "postgres"

    def __init__(self, schema: str, tables: dict[str, str], indexes: dict[str, str] | None = None):
        super().__init__(tables, indexes)
        self.schema = schema
        self._render = cache(self._compose)

    def _compose(self, text: str) -> sql.Composed:
        names = {key: sql.Identifier(self.schema, table) for key, table in self.tables.items()}
        # An index lives in its table's schema: its name is never qualified.
        names.update({key: sql.Identifier(index) for key, index in self.indexes.items()})
        return sql.SQL(text).format(**names)  # type: ignore[arg-type]

    def render(self, text: str) -> Any:
        return self._render(text)

    def existing_indexes(self, cursor: Any) -> set[str]:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (self.schema,))
        return {_first_column(row) for row in cursor.fetchall()}

    def uuid(self, value: UUID | None) -> Any:
        return value

    def time(self, value: datetime | None) -> Any:
        return value

    def insert_many(self, cursor: Any, table: str, columns: Sequence[str], rows: list[Any]) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(self.schema, self.tables[table]),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
        )
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def read_uuid(self, value: Any) -> UUID | None:
        return value

    def read_time(self, value: Any) -> datetime | None:
        return value

    def read_json(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value


class SQLiteDialect(Dialect):
    name = "sqlite"

    def __init__(self, tables: dict[str, str], indexes: dict[str, str] | None = None):
        super().__init__(tables, indexes)
        self._render = cache(self._compose)

    def _compose(self, text: str) -> str:
        names = {key: f'"{name}"' for key, name in {**self.tables, **self.indexes}.items()}
        return text.format(**names).replace("%s", "?")

    def render(self, text: str) -> Any:
        return self._render(text)

    def existing_indexes(self, cursor: Any) -> set[str]:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        return {_first_column(row) for row in cursor.fetchall()}

    def uuid(self, value: UUID | None) -> Any:
        return None if value is None else str(value)

    def time(self, value: datetime | None) -> Any:
        return None if value is None else value.astimezone(UTC).strftime(SQLITE_TIME_FORMAT)

    def insert_many(self, cursor: Any, table: str, columns: Sequence[str], rows: list[Any]) -> None:
        marks = ", ".join(["?"] * len(columns))
        names = ", ".join(f'"{c}"' for c in columns)
        cursor.executemany(f'INSERT INTO "{self.tables[table]}" ({names}) VALUES ({marks})', rows)

    def flag(self, value: bool) -> Any:
        return 1 if value else 0

    def read_uuid(self, value: Any) -> UUID | None:
        return None if value is None else UUID(value)

    def read_time(self, value: Any) -> datetime | None:
        return (
            None
            if value is None
            else datetime.strptime(value, SQLITE_TIME_FORMAT).replace(tzinfo=UTC)
        )

    def read_json(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


def _first_column(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
