"""Append-only event and snapshot tables: the database itself refuses to change a stored row.

The store factories (`store.config`) call `protect_postgres_table` or
`protect_sqlite_table` for every event and snapshot table they create, so a table a
future application adds is protected the same way; tracking and read-model tables are
left writable. Installing is idempotent: a table already protected is left as it is.

PostgreSQL: one statement-level BEFORE UPDATE OR DELETE OR TRUNCATE trigger. It fires
even for the table's owner and for a statement that matches no row, and for an upsert
(`INSERT ... ON CONFLICT DO UPDATE` fires the UPDATE statement triggers whether or not
a row conflicts). The library's writers take `LOCK TABLE ... IN EXCLUSIVE MODE`, which
needs the UPDATE privilege, so a service role keeps UPDATE and the trigger refuses it.

SQLite: BEFORE UPDATE and BEFORE DELETE triggers, plus a BEFORE INSERT trigger that
refuses a row whose key (or rowid) is already stored: `INSERT OR REPLACE`, `REPLACE`
and an upsert would otherwise overwrite it, and REPLACE's implicit delete fires no
DELETE trigger unless `recursive_triggers` is on. A plain duplicate insert (a lost
concurrency race) still fails with an integrity error, as it did before.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

# The name of the PostgreSQL trigger (and the prefix of SQLite's) on every protected table.
TRIGGER = "tasktrail_append_only"
PG_FUNCTION = "tasktrail_refuse_change"

_PG_FUNCTION_BODY = """
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'tasktrail never changes or removes a stored event or snapshot '
                     '(an UPDATE includes INSERT ... ON CONFLICT DO UPDATE).';
END
"""


def protect_postgres_table(datastore: Any, table: str) -> None:
    """Installs the refusing trigger on `datastore.schema`.`table`, unless it is there."""
    schema = datastore.schema
    with datastore.transaction(commit=True) as cursor:
        # CREATE TRIGGER waits for the writers' table lock: patiently, on a busy store
        # being upgraded, rather than within the service's short lock_timeout.
        cursor.execute("SET LOCAL lock_timeout = '60s'", prepare=False)
        # Processes installing at once (tests open stores with DDL on) take turns.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}.{TRIGGER}",), prepare=False
        )
        cursor.execute(
            "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = %s",
            (schema, PG_FUNCTION),
            prepare=False,
        )
        if cursor.fetchone() is None:
            cursor.execute(
                sql.SQL("CREATE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
                    sql.Identifier(schema),
                    sql.Identifier(PG_FUNCTION),
                    sql.Literal(_PG_FUNCTION_BODY),
                ),
                prepare=False,
            )
        cursor.execute(
            "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s",
            (schema, table, TRIGGER),
            prepare=False,
        )
        if cursor.fetchone() is None:
            cursor.execute(
                sql.SQL(
                    "CREATE TRIGGER {} BEFORE UPDATE OR DELETE OR TRUNCATE ON {}.{} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION {}.{}()"
                ).format(
                    sql.Identifier(TRIGGER),
                    sql.Identifier(schema),
                    sql.Identifier(table),
                    sql.Identifier(schema),
                    sql.Identifier(PG_FUNCTION),
                ),
                prepare=False,
            )


def postgres_protected_tables(cursor: Any, schema: str) -> list[str]:
    """The names of the tables of `schema` that carry the append-only trigger."""
    cursor.execute(
        "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND t.tgname = %s ORDER BY c.relname",
        (schema, TRIGGER),
    )
    return [row[0] if isinstance(row, tuple) else row["relname"] for row in cursor.fetchall()]


def sqlite_triggers(table: str, *, has_rowid: bool) -> list[str]:
    """The CREATE TRIGGER statements that make one SQLite table append-only."""
    # Library table names are fixed identifiers (stored_events, stored_snapshots).
    if not table.replace("_", "").isalnum():
        raise ValueError(f"not a plain table name: {table!r}")
    same_row = "originator_id = NEW.originator_id AND originator_version = NEW.originator_version"
    if has_rowid:
        # An explicit rowid could replace another event's row under a new key.
        same_row = f"({same_row}) OR rowid = NEW.rowid"
    refuse = f"SELECT RAISE(ABORT, '{table} is append-only: {{}} refused')"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {TRIGGER}_{table}_update BEFORE UPDATE ON {table} "
        f"BEGIN {refuse.format('UPDATE')}; END",
        f"CREATE TRIGGER IF NOT EXISTS {TRIGGER}_{table}_delete BEFORE DELETE ON {table} "
        f"BEGIN {refuse.format('DELETE')}; END",
        f"CREATE TRIGGER IF NOT EXISTS {TRIGGER}_{table}_overwrite BEFORE INSERT ON {table} "
        f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {same_row}) "
        f"BEGIN {refuse.format('INSERT over a stored row (REPLACE, upsert)')}; END",
    ]


def protect_sqlite_table(datastore: Any, table: str, *, has_rowid: bool) -> None:
    """Installs the refusing triggers on one table of an SQLite store (IF NOT EXISTS)."""
    with datastore.transaction(commit=True) as cursor:
        for statement in sqlite_triggers(table, has_rowid=has_rowid):
            cursor.execute(statement)
