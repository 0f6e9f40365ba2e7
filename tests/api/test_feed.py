"""The event feed (`GET /v1/events`), its live stream (SSE) and export (NDJSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.conftest import (
    Api,
    assert_problem,
    issue_tokens,
    settings_for,
    start_server,
    step,
)

SYSTEM_WORK = (step("sync", "push", "in_progress"), step("sync", "push", "done"))


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """The app with its projection runners running (the shared fixture runs none)."""
    return make_api(run_projections=True)


def feed(api: Api, query: str = "", who: str = "reader") -> dict[str, Any]:
    response = api.call("GET", f"/v1/events?{query}", who)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_feed_pages_through_the_orgs_events_in_global_order(api: Api) -> None:
    first = api.create_task(title="first")
    second = api.create_task(title="second", kind="immediate", jobs=[])
    api.create_task("intruder_writer", title="elsewhere")
    at = api.reported(first["id"], step("build", "clone", "in_progress"))["position"]
    events = feed(api, f"min_position={at}&limit=1000")["events"]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    tasks = [e["task_id"] for e in events if e["task_id"]]
    assert set(tasks) == {first["id"], second["id"]}  # no other org's events
    # API-key events of the org are in its feed, without a task.
    assert {e["type"] for e in events if e["task_id"] is None} == {"ApiKeyIssued"}
    # Paging with `after` and `next_after` visits every event once.
    seen, after = [], 0
    while True:
        page = feed(api, f"after={after}&limit=3")
        seen += page["events"]
        if not page["events"]:
            assert page["next_after"] == after
            break
        after = page["next_after"]
    assert seen == events
    # Filters: one task; one type.
    assert {e["task_id"] for e in feed(api, f"task_id={second['id']}")["events"]} == {second["id"]}
    created = feed(api, "type=TaskCreated")["events"]
    assert [e["task_id"] for e in created] == [first["id"], second["id"]]
    entry = created[0]
    assert set(entry) >= {"position", "task_id", "stream_id", "version", "type",
                          "recorded_at", "occurred_at", "actor", "data"}  # fmt: skip
    assert entry["actor"]["kind"] == "api_key" and entry["recorded_at"].endswith("Z")


def test_system_work_is_in_the_feed_only_for_auditors_who_ask(api: Api) -> None:
    task = api.create_task()
    at = api.reported(task["id"], *SYSTEM_WORK)["position"]
    regular = feed(api, f"task_id={task['id']}&min_position={at}")["events"]
    audited = feed(api, f"task_id={task['id']}&include_system=true", "auditor")["events"]
    hidden = [e for e in audited if e["data"].get("job") == "sync"]
    assert hidden and not [e for e in regular if e["data"].get("job") == "sync"]
    # The creation is redacted for regular readers: no system job in its plan.
    assert [j["key"] for j in regular[0]["data"]["jobs"]] == ["build", "deploy"]
    assert [j["key"] for j in audited[0]["data"]["jobs"]] == ["build", "deploy", "sync"]
    assert_problem(api.call("GET", "/v1/events?include_system=true", "reader"), 403)


def test_feed_scoping_and_validation(api: Api) -> None:
    assert_problem(api.call("GET", "/v1/events", "platform"), 422)
    assert_problem(api.call("GET", "/v1/events?org=evil", "reader"), 403)
    # Without min_position the feed may lag; wait for a write we know of.
    at = api.create_task()["position"]
    assert feed(api, f"org=acme&min_position={at}", "platform")["events"]
    assert_problem(api.call("GET", "/v1/events?limit=1001", "reader"), 422)
    assert_problem(api.call("GET", "/v1/events?after=-1", "reader"), 422)


def test_export_is_every_event_of_the_org_as_ndjson_for_auditors(api: Api) -> None:
    quiet = api.create_task(silent=True)
    at = api.reported(quiet["id"], *SYSTEM_WORK)["position"]
    api.create_task("intruder_writer")
    response = api.call("GET", f"/v1/export?min_position={at}", "auditor")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    *lines, trailer = [json.loads(line) for line in response.text.splitlines()]
    # The last line is the export's own checkpoint (tests/api/test_checkpoints.py).
    assert set(trailer) == {"checkpoint", "public_key", "algorithm"}
    everything = feed(api, "include_system=true&limit=1000", "auditor")["events"]
    assert lines == everything
    assert int(response.headers["x-export-until"]) >= at
    # Silent tasks and system work included.
    assert any(e["task_id"] == quiet["id"] and e["data"].get("job") == "sync" for e in lines)
    # Bounds.
    middle = lines[len(lines) // 2]["position"]
    bounded = api.call("GET", f"/v1/export?after={middle}&until={at}", "admin").text.splitlines()
    assert [json.loads(x)["position"] for x in bounded[:-1]] == [
        e["position"] for e in lines if middle < e["position"] <= at
    ]
    # Auditors and admins only; platform tokens name the org.
    assert_problem(api.call("GET", "/v1/export", "reader"), 403)
    assert_problem(api.call("GET", "/v1/export", "writer"), 403)
    assert_problem(api.call("GET", "/v1/export", "platform"), 422)
    assert api.call("GET", "/v1/export?org=evil", "platform").text.count("\n") >= 1


# ---------------------------------------------------------------- Server-Sent Events


@dataclass
class Message:
    id: int | None
    data: dict[str, Any] | None
    comment: str | None = None


def messages(lines: Iterator[str]) -> Iterator[Message]:
    """SSE messages (and comments) from a line iterator."""
    event_id, data = None, None
    for line in lines:
        if line.startswith(":"):
            yield Message(None, None, line[1:].strip())
        elif line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("data:"):
            data = json.loads(line[5:].strip())
        elif line == "" and data is not None:
            yield Message(event_id, data)
            event_id, data = None, None


@dataclass
class LiveApi:
    url: str
    tokens: dict[str, str]
    position: Callable[[], int]

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    @contextmanager
    def stream(
        self, who: str = "reader", query: str = "", **headers: str
    ) -> Iterator[Iterator[Message]]:
        with (
            httpx.Client(timeout=10) as client,
            client.stream(
                "GET", f"{self.url}/v1/events/stream?{query}", headers=self.headers(who, **headers)
            ) as response,
        ):
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield messages(response.iter_lines())

    def wait_for(self, position: int) -> None:
        """Returns once the event feed has processed `position` (by `min_position`)."""
        url = f"{self.url}/v1/events?limit=1&min_position={position}"
        assert httpx.get(url, headers=self.headers("reader")).status_code == 200

    def create(self, **fields: Any) -> dict[str, Any]:
        body = {"type": "app.deploy", "title": "t", "kind": "immediate",
                "author": {"id": "u-1", "name": "A", "kind": "user"}, **fields}  # fmt: skip
        response = httpx.post(f"{self.url}/v1/tasks", json=body, headers=self.headers("writer"))
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
def live(store_url: str, tmp_path) -> Iterator[LiveApi]:  # type: ignore[no-untyped-def]
    server = start_server(
        settings_for(store_url, tmp_path, run_projections=True, sse_heartbeat_seconds=0.3)
    )
    services = server.server.config.app.state.services  # type: ignore[union-attr]
    try:
        yield LiveApi(
            server.url,
            issue_tokens(services.ledger),
            lambda: services.ledger.recorder.max_notification_id() or 0,
        )
    finally:
        server.server.should_exit = True
        server.thread.join(timeout=20)


def next_event(stream: Iterator[Message]) -> Message:
    """The next event message (heartbeats skipped)."""
    return next(m for m in stream if m.comment is None)


def until_heartbeat(stream: Iterator[Message]) -> list[Message]:
    """The messages sent before the stream went idle (its next heartbeat)."""
    received: list[Message] = []
    for message in stream:
        if message.comment == "heartbeat":
            return received
        received.append(message)
    return received


def test_a_client_connected_before_a_write_receives_it(live: LiveApi) -> None:
    with live.stream(query=f"after={live.position()}") as stream:
        assert until_heartbeat(stream) == []  # connected, caught up, idle
        task = live.create(title="news")
        message = next_event(stream)
        assert message.id == task["position"]
        assert message.data is not None and message.data["task_id"] == task["id"]
        assert message.data["type"] == "TaskCreated"


def test_a_client_resuming_with_last_event_id_gets_exactly_the_events_after_it(
    live: LiveApi,
) -> None:
    start = live.position()
    written = [live.create(title=f"t{n}")["position"] for n in range(4)]
    live.wait_for(written[-1])
    with live.stream(query=f"after={start}") as stream:
        first = [m.id for m in until_heartbeat(stream)]
    assert first == written
    # Reconnect after the second event: the third and fourth, nothing else, no repeats.
    with live.stream(**{"Last-Event-ID": str(written[1])}) as stream:
        resumed = [m.id for m in until_heartbeat(stream)]
        later = live.create(title="later")["position"]
        assert next_event(stream).id == later
    assert resumed == written[2:]


def test_the_stream_keeps_system_work_for_auditors_who_ask(live: LiveApi) -> None:
    start = live.position()
    task = live.create(
        kind="executable",
        jobs=[{"key": "sync", "name": "Sync", "system": True,
               "steps": [{"key": "push", "name": "Push"}]}],
    )  # fmt: skip
    response = httpx.post(
        f"{live.url}/v1/tasks/{task['id']}/transitions",
        json={"transitions": [{"job": "sync", "step": "push", "status": "in_progress"}]},
        headers=live.headers("writer"),
    )
    assert response.status_code == 200, response.text
    live.wait_for(response.json()["position"])
    with live.stream("reader", f"after={start}") as stream:
        regular = [m.data["type"] for m in until_heartbeat(stream) if m.data]
    with live.stream("auditor", f"after={start}&include_system=true") as stream:
        audited = [m.data["type"] for m in until_heartbeat(stream) if m.data]
    assert "JobStarted" in audited and "JobStarted" not in regular
    assert "TaskCreated" in regular


# ---------------------------------------------------------------- revoked tokens


def issue_reader(live: LiveApi) -> dict[str, Any]:
    """A new acme reader key (id and token), issued over HTTP."""
    response = httpx.post(
        f"{live.url}/v1/api-keys",
        json={"org": "acme", "role": "reader", "name": "dashboard"},
        headers=live.headers("platform"),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.parametrize("revoked_by", ["this process", "another process"])
def test_a_stream_ends_soon_after_its_token_is_revoked(
    live: LiveApi, make_api: Callable[..., Api], store_url: str, revoked_by: str
) -> None:
    if revoked_by == "another process" and store_url.startswith("memory"):
        pytest.skip("an in-memory store is not shared between processes")
    key = issue_reader(live)
    live.tokens["dashboard"] = key["token"]

    with live.stream("dashboard", f"after={live.position()}") as stream:
        assert until_heartbeat(stream) == []  # connected, caught up, idle
        # Revoke the key the stream was opened with.
        if revoked_by == "this process":
            revoke = httpx.delete(
                f"{live.url}/v1/api-keys/{key['id']}", headers=live.headers("platform")
            )
        else:
            revoke = make_api().call("DELETE", f"/v1/api-keys/{key['id']}", "platform")
        assert revoke.status_code == 204, revoke.text
        # The stream ends on its own; heartbeats keep coming while it lasts.
        deadline = time.monotonic() + 10
        rest = []
        for message in stream:
            assert time.monotonic() < deadline, "the stream outlived its token"
            rest.append(message)

    assert rest and rest[-1].comment == "the token was revoked", rest
    reconnect = httpx.get(f"{live.url}/v1/events/stream", headers=live.headers("dashboard"))
    assert_problem(reconnect, 401)


def test_a_stream_of_a_key_still_valid_goes_on(live: LiveApi) -> None:
    key = issue_reader(live)
    live.tokens["dashboard"] = key["token"]
    other = issue_reader(live)

    with live.stream("dashboard", f"after={live.position()}") as stream:
        assert until_heartbeat(stream) == []
        # Revoking another key leaves this stream alone: it still delivers news.
        revoke = httpx.delete(
            f"{live.url}/v1/api-keys/{other['id']}", headers=live.headers("platform")
        )
        assert revoke.status_code == 204
        # Three heartbeats later (each one a check of the token) it is still open ...
        seen = [m for _ in range(3) for m in until_heartbeat(stream)]
        assert not [m for m in seen if m.comment is not None], seen
        # ... and still delivers news.
        task = live.create(title="still watched")
        news = next((m for m in stream if m.data and m.data["type"] == "TaskCreated"), None)
        assert news is not None and news.id == task["position"]
