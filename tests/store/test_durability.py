"""On a PostgreSQL server that may lose acknowledged writes, the service refuses to start."""

from __future__ import annotations

import psycopg
import pytest

from api import cli
from store.config import StoreConfig
from store.durability import ALLOW_UNSAFE_ENV, UnsafeStoreError, check_durability, unsafe_settings
from tests.store.roles import as_role, temporary_role


def tables_in(url: str) -> list[str]:
    store = StoreConfig.from_url(url)
    with psycopg.connect(StoreConfig.from_url(url).conninfo()) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (store.pg_schema,)
        ).fetchall()
    return [row[0] for row in rows]


def test_a_durable_server_passes_the_check(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StoreConfig.from_url(pg_url)
    if found := unsafe_settings(store):
        pytest.skip(f"the test server is itself a throwaway one ({', '.join(found)})")
    monkeypatch.delenv(ALLOW_UNSAFE_ENV, raising=False)
    check_durability(store)


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_synchronous_commit_off_for_the_services_role_stops_start_up_naming_the_setting(
    pg_url: str,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(ALLOW_UNSAFE_ENV, raising=False)
    with temporary_role(("synchronous_commit", "off")) as role:
        monkeypatch.setenv("TASKTRAIL_DATABASE_URL", as_role(pg_url, role))
        assert cli.main([command]) == 2
        error = capsys.readouterr().err
        assert "synchronous_commit=off" in error
        assert ALLOW_UNSAFE_ENV in error
    assert tables_in(pg_url) == []  # refused before creating anything


def test_a_throwaway_store_may_run_unsafe_when_told_so(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with temporary_role(("synchronous_commit", "off")) as role:
        store = StoreConfig.from_url(as_role(pg_url, role))
        assert "synchronous_commit=off" in unsafe_settings(store)
        monkeypatch.delenv(ALLOW_UNSAFE_ENV, raising=False)
        with pytest.raises(UnsafeStoreError, match="synchronous_commit=off"):
            check_durability(store)
        monkeypatch.setenv(ALLOW_UNSAFE_ENV, "1")
        check_durability(store)
    assert "WARNING" in capsys.readouterr().err


def test_an_embedded_store_has_nothing_to_check(tmp_path: object) -> None:
    assert unsafe_settings(StoreConfig.from_url(f"sqlite:///{tmp_path}/t.sqlite")) == []
