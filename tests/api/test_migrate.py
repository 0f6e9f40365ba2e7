"""`tasktrail migrate` creates every table once; again, it changes nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from api import cli
from domain.application import TaskLedger
from projections.runtime import CATALOGUE, Projections
from store.config import StoreConfig


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_is_idempotent_and_leaves_a_store_that_opens_without_ddl(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
        if backend == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    monkeypatch.setenv("TASKTRAIL_DATABASE_URL", url)
    assert cli.main(["migrate"]) == 0
    assert cli.main(["migrate"]) == 0
    store = replace(StoreConfig.from_url(url), create_tables=False)
    assert store.env("tasks")["CREATE_TABLE"] == "n"
    ledger = TaskLedger(store.env("tasks"))
    try:
        projections = Projections(store, ledger)
        try:
            assert {row["name"] for row in projections.status()} == set(CATALOGUE)
        finally:
            projections.close()
        assert ledger.recorder.max_notification_id() in (None, 0)
    finally:
        ledger.close()
