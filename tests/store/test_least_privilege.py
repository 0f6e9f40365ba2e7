"""The service runs as a role that owns no table; even it cannot change stored events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from api import cli
from api.app import create_app
from store.config import StoreConfig
from tests.api.conftest import check_responses, deploy_task, issue_tokens, settings_for, step
from tests.store.roles import as_role, temporary_role


def run_as(url: str, statement: str) -> None:
    store = StoreConfig.from_url(url)
    with psycopg.connect(store.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.pg_schema)))
        conn.execute(statement)  # type: ignore[arg-type]


def test_the_service_works_as_a_granted_role_that_cannot_rewrite_history(
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with temporary_role() as role:
        # The owner migrates and grants; the service's own start-up migration runs no DDL.
        monkeypatch.setenv("TASKTRAIL_DATABASE_URL", pg_url)
        assert cli.main(["migrate", "--grant", role]) == 0
        service_url = as_role(pg_url, role)
        monkeypatch.setenv("TASKTRAIL_DATABASE_URL", service_url)
        assert cli.main(["migrate"]) == 0
        assert "no DDL is run" in capsys.readouterr().out

        settings = settings_for(service_url, tmp_path, run_projections=True, create_tables=False)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            responses: list[Any] = []
            client.event_hooks["response"].append(responses.append)
            tokens = issue_tokens(client.app.state.services.ledger)  # type: ignore[attr-defined]
            writer = {"Authorization": f"Bearer {tokens['writer']}"}
            created = client.post("/v1/tasks", json=deploy_task(), headers=writer)
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
            reported = client.post(
                f"/v1/tasks/{task_id}/transitions",
                json={"transitions": [step("build", "clone", "in_progress")]},
                headers=writer,
            )
            assert reported.status_code == 200, reported.text
            logged = client.post(
                f"/v1/tasks/{task_id}/jobs/build/steps/clone/logs",
                content="cloning\n",
                headers={**writer, "Content-Type": "text/plain"},
            )
            assert logged.status_code == 201, logged.text
            log = client.get(f"/v1/tasks/{task_id}/jobs/build/steps/clone/logs", headers=writer)
            assert log.status_code == 200 and "cloning" in log.text, log.text
            # The read models (written by the runners, as the role) catch up.
            listed = client.get(
                "/v1/tasks",
                params={"min_position": reported.json()["position"]},
                headers=writer,
            )
            assert listed.status_code == 200, listed.text
            assert task_id in {t["id"] for t in listed.json()["items"]}, listed.json()
            check_responses(responses)

        for table in ("taskledger_events", "taskledger_snapshots", "steplogs_events"):
            # The role holds UPDATE (for LOCK TABLE): the trigger refuses every use of it.
            for statement in (
                f"UPDATE {table} SET topic = 'x'",
                f"INSERT INTO {table} SELECT * FROM {table} "
                "ON CONFLICT (originator_id, originator_version) DO UPDATE SET topic = 'x'",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                    run_as(service_url, statement)
            # The rest it was never granted, nor can it switch the protection off.
            for statement in (
                f"DELETE FROM {table}",
                f"TRUNCATE {table}",
                f"ALTER TABLE {table} DISABLE TRIGGER ALL",
                f"DROP TRIGGER tasktrail_append_only ON {table}",
                f"DROP TABLE {table}",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    run_as(service_url, statement)
