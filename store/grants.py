"""The privileges a least-privilege service role needs on a PostgreSQL store.

The tables' owner runs `tasktrail migrate --grant ROLE`; the service then runs as
ROLE, which does not own any table, so it can neither drop nor disable the
append-only triggers (`store.append_only`). ROLE gets:

- on the schema: USAGE;
- on each append-only table (every table carrying the trigger, so a table a future
  application adds is covered): SELECT, INSERT, and UPDATE, only because the library's
  writers take `LOCK TABLE ... IN EXCLUSIVE MODE`, which requires it (the trigger
  refuses any actual UPDATE); anything more it was given earlier is revoked;
- on every other table (tracking, read models): SELECT, INSERT, UPDATE, DELETE, TRUNCATE;
- on the sequences (notification ids): USAGE, SELECT, UPDATE.

The same, by hand, for a schema `tasktrail` and a role `tasktrail_service`:

    GRANT USAGE ON SCHEMA tasktrail TO tasktrail_service;
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA tasktrail
        TO tasktrail_service;
    REVOKE DELETE, TRUNCATE, REFERENCES, TRIGGER
        ON tasktrail.taskledger_events, tasktrail.taskledger_snapshots,
           tasktrail.steplogs_events FROM tasktrail_service;
    GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA tasktrail TO tasktrail_service;

Run it again after a migration that adds tables.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from store.append_only import postgres_protected_tables
from store.config import StoreConfig

EVENT_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE")
OTHER_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")


def grant_service_role(store: StoreConfig, role: str) -> dict[str, list[str]]:
    """Grants `role` what the service needs on `store`'s schema; the tables, by kind."""
    if store.backend != "postgres":
        raise ValueError("roles and grants exist on PostgreSQL only")
    schema = store.pg_schema or "public"
    with (
        psycopg.connect(store.conninfo(), connect_timeout=store.pg_connect_timeout) as conn,
        conn.cursor() as cursor,
    ):
        protected = set(postgres_protected_tables(cursor, schema))
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname",
            (schema,),
        )
        tables = [row[0] for row in cursor.fetchall()]
        who = sql.Identifier(role)
        cursor.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), who)
        )
        for table in tables:
            name = sql.Identifier(schema, table)
            privileges: tuple[str, ...] = OTHER_TABLE_PRIVILEGES
            if table in protected:
                cursor.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(name, who))
                privileges = EVENT_TABLE_PRIVILEGES
            cursor.execute(
                sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in privileges), name, who
                )
            )
        cursor.execute(
            sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                sql.Identifier(schema), who
            )
        )
    return {
        "append_only": sorted(protected & set(tables)),
        "writable": [t for t in tables if t not in protected],
    }
