"""`tasktrail verify`: a progress bar on stderr, problems on stdout, exit 1 when any."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.cli import main
from domain.application import TaskLedger
from store.config import StoreConfig
from tests.application.support import create_executable, job
from tests.store.tampering import tamper


@pytest.fixture
def sqlite_url(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
    monkeypatch.setenv("TASKTRAIL_DATABASE_URL", url)
    monkeypatch.setenv("TASKTRAIL_VAR_DIR", str(tmp_path / "var"))
    return url


def test_verify_exits_1_naming_the_edited_event(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = TaskLedger(StoreConfig.from_url(sqlite_url).env("tasks"))
    try:
        task_id = create_executable(ledger, job("build", "compile"))
    finally:
        ledger.close()
    assert main(["verify"]) == 0
    assert "100%" in capsys.readouterr().err

    with tamper(sqlite_url) as conn:
        (state,) = conn.execute(
            "SELECT state FROM stored_events WHERE originator_id = ?", (task_id.hex,)
        ).fetchone()
        conn.execute(
            "UPDATE stored_events SET state = ? WHERE originator_id = ?",
            (state.replace(b"Deploy shop", b"Deploy shoP"), task_id.hex),
        )

    assert main(["verify", "--org", "acme", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [(p["task_id"], p["version"]) for p in report["problems"]] == [(str(task_id), 1)]
    assert report["problems"][0]["reason"].startswith("edited")
    assert main(["verify", "--task-id", str(task_id)]) == 1
    assert f"task_id {task_id} version 1: edited" in capsys.readouterr().out
