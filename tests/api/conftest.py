"""HTTP fixtures: the app over each store, driven through httpx (Starlette's TestClient).

`api` is an `Api` over a fresh store of each kind (memory, SQLite, PostgreSQL), with
bearer tokens for every role of org `acme` (`reader`, `writer`, `auditor`, `admin`),
two of org `evil` (`intruder_writer`, `intruder_admin`), a key of every role scoped
to `*`, the platform (`platform_reader`, `platform_writer`, `platform_auditor`,
`platform_admin`), and the platform administrator's token (`platform`). Every
response the client receives is checked after the test: no 5xx, ever, and every
error is a problem document.

The projection runners are off unless a test asks for them
(`make_api(run_projections=True)`): these tests read tasks from the store itself,
and idle runners in every test app cost a third of the run time.

`live_servers` starts real uvicorn servers in-process, on free loopback ports, for
what the TestClient cannot show (true concurrency, chunked uploads on a socket).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import Services
from api.settings import Settings
from domain.application import TaskLedger

ADMIN_TOKEN = "tt_admin_test-token"
PROBLEM = "application/problem+json"
ROLES = ("reader", "writer", "auditor", "admin")
AUTHOR = {"id": "u-7", "name": "Bob", "kind": "user"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Asserts `response` is an RFC 9457 problem with `status`; returns its body."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    media = response.headers.get("content-type", "").split(";")[0].strip()
    assert media == PROBLEM, (media, response.text[:500])
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("type"), str) and body["type"], body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert body.get("status") == status, body
    assert "Traceback" not in response.text and 'File "' not in response.text, body
    if status == 422:
        errors = body.get("errors")
        assert isinstance(errors, list) and errors, body
        for error in errors:
            assert isinstance(error.get("loc"), list) and error["loc"], body
            assert isinstance(error.get("msg"), str) and error["msg"], body
    return dict(body)


def error_locs(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in body.get("errors", [])]


def step(job: str, step: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"job": job, "step": step, "status": status, **extra}


def job(job: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"job": job, "status": status, **extra}


QUEUED = {"status": "queued"}


@dataclass
class Api:
    """A client plus bearer tokens for each role of org `acme` and of an intruder org."""

    client: TestClient
    tokens: dict[str, str]
    responses: list[httpx.Response] = field(default_factory=list)

    @property
    def ledger(self) -> TaskLedger:
        services: Services = self.client.app.state.services  # type: ignore[attr-defined]
        return services.ledger

    def headers(self, who: str = "writer", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    def call(self, method: str, path: str, who: str = "writer", **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(who), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def create_task(self, who: str = "writer", **fields: Any) -> dict[str, Any]:
        """Creates `deploy_task()` with `fields` changed; it must be accepted."""
        return self.created({**deploy_task(), **fields}, who)

    def created(self, body: dict[str, Any], who: str = "writer") -> dict[str, Any]:
        """Creates a task from exactly `body`; it must be accepted."""
        response = self.call("POST", "/v1/tasks", who, json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def report(
        self,
        task_id: str,
        *transitions: dict[str, Any],
        who: str = "writer",
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> httpx.Response:
        return self.call(
            "POST",
            f"/v1/tasks/{task_id}/transitions",
            who,
            json={"transitions": list(transitions), **fields},
            headers=headers or {},
        )

    def reported(self, task_id: str, *transitions: dict[str, Any]) -> dict[str, Any]:
        """Reports transitions that must be accepted; returns the task after them."""
        response = self.report(task_id, *transitions)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def get_task(self, task_id: str, who: str = "auditor", **params: Any) -> dict[str, Any]:
        """The task as GET shows it, less the steps' live log totals (which write
        answers leave null), so it compares equal to a write's answer."""
        response = self.call("GET", f"/v1/tasks/{task_id}", who, params=params)
        assert response.status_code == 200, response.text
        return without_log_totals(dict(response.json()))

    def version(self, task_id: str) -> int:
        return int(self.get_task(task_id, "platform", include_system=True)["version"])

    def timeline(self, task_id: str, who: str = "auditor", **params: Any) -> list[dict[str, Any]]:
        response = self.call("GET", f"/v1/tasks/{task_id}/timeline", who, params=params)
        assert response.status_code == 200, response.text
        return list(response.json()["events"])

    def store_position(self) -> int:
        """The store's last global position: unchanged when a request stored nothing."""
        return int(self.ledger.recorder.max_notification_id() or 0)

    def tasks_created(self) -> list[UUID]:
        """The id of every task ever created in this store, from the store itself."""
        notifications = self.ledger.recorder.select_notifications(
            start=None, limit=100_000, topics=["domain.task:Task.TaskCreated"]
        )
        return [n.originator_id for n in notifications]

    def fail(self, task_id: str) -> dict[str, Any]:
        """Drives a task of `deploy_task()` to `failed` (build fails, the rest is canceled)."""
        task = self.reported(
            task_id,
            step("build", "clone", "in_progress"),
            step("build", "clone", "failed", error={"message": "exit code 2", "code": "E_GIT"}),
            job("sync", "canceled"),
        )
        assert task["status"] == "failed", task
        return task

    def finish(self, task_id: str) -> dict[str, Any]:
        """Drives a task of `deploy_task()` to `done`."""
        task = self.reported(task_id, *DONE_RUN)
        assert task["status"] == "done", task
        return task


DONE_RUN = (
    QUEUED,
    step("build", "clone", "in_progress"),
    step("build", "clone", "done"),
    step("build", "compile", "in_progress"),
    step("build", "compile", "done"),
    step("deploy", "rollout", "in_progress"),
    step("deploy", "rollout", "done"),
    step("sync", "push", "in_progress"),
    step("sync", "push", "done"),
)


def deploy_task() -> dict[str, Any]:
    return {
        "type": "app.deploy",
        "title": "Deploy shop to production",
        "kind": "executable",
        "author": {"id": "u-42", "name": "Alice", "kind": "user"},
        "project": "shop",
        "labels": {"app": "shop", "env": "prod"},
        "jobs": [
            {
                "key": "build",
                "name": "Build image",
                "steps": [{"key": "clone", "name": "Clone"}, {"key": "compile", "name": "Compile"}],
            },
            {
                "key": "deploy",
                "name": "Deploy",
                "needs": ["build"],
                "steps": [{"key": "rollout", "name": "Roll out"}],
            },
            {
                "key": "sync",
                "name": "Sync registry",
                "system": True,
                "steps": [{"key": "push", "name": "Push", "system": True}],
            },
        ],
    }


# Who holds each token `issue_tokens` issues: (org scope, role, name in `Api.tokens`).
TOKEN_HOLDERS = (
    *(("acme", role, role) for role in ROLES),
    *(("evil", role, f"intruder_{role}") for role in ("writer", "admin")),
    # Issued last, so an org's own keys come first in every listing.
    *(("*", role, f"platform_{role}") for role in ROLES),
)


def issue_tokens(ledger: TaskLedger) -> dict[str, str]:
    """Every role's token; issued straight through the ledger (issuing by HTTP has tests)."""
    tokens = {"platform": ADMIN_TOKEN}
    for org, role, holder in TOKEN_HOLDERS:
        name = f"{'platform' if org == '*' else org}-{role}"
        _, token, _ = ledger.issue_key(org=org, role=role, name=name)
        assert token is not None
        tokens[holder] = token
    return tokens


def check_responses(responses: list[httpx.Response]) -> None:
    """No server error ever; every error answer is a problem document."""
    server_errors = [
        (r.request.method, str(r.request.url), r.status_code, r.text[:300])
        for r in responses
        if r.status_code >= 500
    ]
    assert not server_errors, server_errors
    for response in responses:
        if response.status_code >= 400:
            assert_problem(response, response.status_code)


def settings_for(store_url: str, tmp_path: Any, **settings: Any) -> Settings:
    """The service's settings over `store_url`; projections off unless asked for."""
    return Settings(
        database_url=store_url,
        admin_token=ADMIN_TOKEN,
        var_dir=tmp_path / "var",
        **{"run_projections": False, **settings},
    )


@pytest.fixture
def make_api(store_url: str, tmp_path) -> Iterator[Callable[..., Api]]:  # type: ignore[no-untyped-def]
    apis: list[Api] = []

    def make(**settings: Any) -> Api:
        client = TestClient(
            create_app(settings_for(store_url, tmp_path, **settings)),
            raise_server_exceptions=False,
        )
        client.__enter__()
        api = Api(client, {})
        client.event_hooks["response"].append(api.responses.append)
        api.tokens = issue_tokens(api.ledger)
        apis.append(api)
        return api

    yield make
    for api in apis:
        api.client.__exit__(None, None, None)
    for api in apis:
        check_responses(api.responses)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


# ---------------------------------------------------------------- real servers


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread


def start_server(settings: Settings) -> LiveServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on", backlog=2048)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    # Apps in one process share the module-level routers, and FastAPI builds each route
    # lazily on its first match: two apps doing so at once race on shared FieldInfo
    # objects (pydantic then warns). Separate processes never share them; warm each
    # server up in turn (an unknown path is matched against every route).
    assert httpx.get(f"{url}/v1/warm-up", timeout=20).status_code == 404
    return LiveServer(url, server, thread)


@pytest.fixture
def live_servers(store_url: str, tmp_path) -> Iterator[Callable[[int], list[LiveServer]]]:  # type: ignore[no-untyped-def]
    """Starts n uvicorn servers (service processes) on one store."""
    started: list[LiveServer] = []

    def start(n: int) -> list[LiveServer]:
        servers = [start_server(settings_for(store_url, tmp_path)) for _ in range(n)]
        started.extend(servers)
        return servers

    yield start
    for live in started:
        live.server.should_exit = True
    for live in started:
        live.thread.join(timeout=20)


LOG_TOTALS = ("log_chunks", "log_bytes", "log_refused_bytes")


def without_log_totals(task: dict[str, Any]) -> dict[str, Any]:
    jobs = [
        {**job, "steps": [{**s, **dict.fromkeys(LOG_TOTALS)} for s in job["steps"]]}
        for job in task["jobs"]
    ]
    return {**task, "jobs": jobs}
