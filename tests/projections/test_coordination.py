"""The election's PostgreSQL session notices a dead peer within seconds, not hours."""

from __future__ import annotations

import threading

import psycopg
import pytest

from projections.coordination import PostgresCoordinator, advisory_key
from store.config import StoreConfig

pytestmark = pytest.mark.postgres

SETTINGS = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
            "tcp_user_timeout")  # fmt: skip


def test_the_leaders_session_gives_up_on_a_silent_peer_in_seconds(pg_url: str) -> None:
    """A leader whose host dies sends no FIN; with PostgreSQL's defaults (keepalive
    after 7,200 s idle) its advisory lock, and the standby, would wait two hours."""
    store = StoreConfig.from_url(pg_url)
    key = advisory_key(store.pg_dbname, store.pg_schema, "coordination-test")
    leader = PostgresCoordinator(store.conninfo(), key, channel=None)
    try:
        assert leader.acquire(threading.Event(), wait=False)
        session = leader._connection()
        applied = {name: session.execute(f"SHOW {name}").fetchone() for name in SETTINGS}
        with psycopg.connect(store.conninfo(), autocommit=True) as other:
            holders = other.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            ).fetchall()
            defaults = {name: other.execute(f"SHOW {name}").fetchone() for name in SETTINGS}
        # The session holding the lock is the one that detects a silent peer.
        assert (session.info.backend_pid,) in holders
        assert applied == {
            "tcp_keepalives_idle": ("10",),
            "tcp_keepalives_interval": ("5",),
            "tcp_keepalives_count": ("3",),
            "tcp_user_timeout": ("25000",),
        }, defaults
    finally:
        leader.release()
        leader.close()
