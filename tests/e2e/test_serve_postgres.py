"""A real `tasktrail serve` process (the installed console script) on PostgreSQL,
driven through a real socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ADMIN = "tt_admin_e2e"


def tasktrail_script() -> str:
    """The venv's `tasktrail` console script, the command a user runs (not `python -m`):
    it proves the installed entry point starts the service."""
    script = Path(sys.executable).with_name("tasktrail")
    assert script.is_file(), f"{script} is missing: install the project (pip install -e .)"
    return str(script)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(pg_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "TASKTRAIL_DATABASE_URL": pg_url,
        "TASKTRAIL_ADMIN_TOKEN": ADMIN,
        "TASKTRAIL_VAR_DIR": str(tmp_path / "var"),
        "TASKTRAIL_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [tasktrail_script(), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not become ready")
        yield base
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
        assert b"Traceback" not in output, output.decode()


def test_whole_deploy_with_forced_rerun_over_a_real_socket(server: str) -> None:
    # The admin issues a writer key for org acme.
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        key = admin.post("/v1/api-keys", json={"org": "acme", "role": "writer", "name": "executor"})
    assert key.status_code == 201, key.text
    token = key.json()["token"]
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}) as client:
        drive_deploy(client)


def drive_deploy(client: httpx.Client) -> None:
    author = {"id": "u-42", "name": "Alice", "kind": "user"}
    plan = [
        {"key": "build", "name": "Build", "steps": [{"key": "compile", "name": "Compile"}]},
        {"key": "lint", "name": "Lint", "steps": [{"key": "ruff", "name": "Ruff"}]},
        {
            "key": "deploy",
            "name": "Deploy",
            "needs": ["build", "lint"],
            "steps": [{"key": "rollout", "name": "Roll out"}],
        },
    ]
    created = client.post(
        "/v1/tasks",
        json={
            "type": "app.deploy",
            "title": "Deploy shop",
            "kind": "executable",
            "author": author,
            "jobs": plan,
        },
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    def report(*transitions: dict[str, object]) -> httpx.Response:
        return client.post(f"/v1/tasks/{task_id}/transitions", json={"transitions": transitions})

    # The executor queues the task and runs build and lint in parallel.
    assert report({"status": "queued"}).json()["status"] == "queued"
    assert report({"job": "build", "step": "compile", "status": "in_progress"}).status_code == 200
    assert report({"job": "lint", "step": "ruff", "status": "in_progress"}).status_code == 200
    # Lint fails with a user-facing error; build still finishes; deploy can never run.
    failed = report(
        {
            "job": "lint",
            "step": "ruff",
            "status": "failed",
            "error": {"message": "3 lint errors", "user_facing": True},
        }
    )
    assert failed.json()["status"] == "in_progress"
    done = report({"job": "build", "step": "compile", "status": "done"}).json()
    assert done["status"] == "failed"
    assert {j["key"]: j["status"] for j in done["jobs"]} == {
        "build": "done",
        "lint": "failed",
        "deploy": "canceled",
    }
    assert done["failure"]["reason"] == "job"
    # A forced rerun downgrades the user-facing failure and ends done_with_warnings.
    rerun = client.post(f"/v1/tasks/{task_id}/rerun", json={"force": True, "author": author})
    assert rerun.status_code == 201, rerun.text
    new_id = rerun.json()["id"]
    assert rerun.json()["rerun_of"] == task_id and rerun.json()["forced"] is True
    task_id = new_id
    for job, step in (("build", "compile"), ("lint", "ruff")):
        assert report({"job": job, "step": step, "status": "in_progress"}).status_code == 200
    report({"job": "build", "step": "compile", "status": "done"})
    downgraded = report(
        {
            "job": "lint",
            "step": "ruff",
            "status": "failed",
            "error": {"message": "3 lint errors", "user_facing": True},
        }
    ).json()
    lint_step = downgraded["jobs"][1]["steps"][0]
    assert lint_step["status"] == "done_with_warnings" and lint_step["downgraded"] is True
    report({"job": "deploy", "step": "rollout", "status": "in_progress"})
    final = report({"job": "deploy", "step": "rollout", "status": "done"}).json()
    assert final["status"] == "done_with_warnings"
    # The old task lists its rerun; the timeline reads the whole story.
    old = client.get(f"/v1/tasks/{rerun.json()['rerun_of']}").json()
    assert old["reruns"] == [new_id]
    timeline = client.get(f"/v1/tasks/{new_id}/timeline").json()["events"]
    assert timeline[-1]["type"] == "TaskFinished"
    assert [e["version"] for e in timeline] == list(range(1, len(timeline) + 1))
