"""A PostgreSQL login role made for one test, dropped (with its grants) afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

from psycopg import sql

from tests.conftest import admin_connect


@contextmanager
def temporary_role(*settings: tuple[str, str]) -> Iterator[str]:
    """A new login role (with `ALTER ROLE ... SET name = value` for each setting)."""
    role = f"tt_test_{uuid4().hex[:10]}"
    with admin_connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for name, value in settings:
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    sql.Identifier(role), sql.Identifier(name), sql.Literal(value)
                )
            )
    try:
        yield role
    finally:
        with admin_connect() as conn:
            # The role's backends (pools, listeners) may outlive the app by a moment.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def as_role(url: str, role: str) -> str:
    """`url` with its user replaced by `role` (no password: the test server trusts loopback)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role}@{host}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
