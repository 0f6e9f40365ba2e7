"""Step logs through HTTP: append, read, download, follow live; who may, and when."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import pytest

from api import log_totals
from api.services import Services
from domain.logs import LoggedStep, StepLog
from projections.log_heads import latest_events
from tests.api.conftest import (
    Api,
    LiveServer,
    assert_problem,
    deploy_task,
    issue_tokens,
    job,
    settings_for,
    start_server,
    step,
)

MIB = 1024 * 1024
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
MULTILINGUAL = [
    "Clonage du dépôt… réussi ✓\n",
    "编译中 第 1/3 步\n",
    "🚀 déployé 🎉 👩‍💻\n",
    "tabs\tCRLF\r\n\x1b[31mANSI\x1b[0m U+2028:\u2028 U+FEFF:\ufeff end\n",
]


def logs_path(task_id: str, job_key: str = "build", step_key: str = "clone") -> str:
    return f"/v1/tasks/{task_id}/jobs/{job_key}/steps/{step_key}/logs"


def append(
    api: Api, task_id: str, body: Any, job_key: str = "build", step_key: str = "clone",
    who: str = "writer", **headers: str,
) -> httpx.Response:  # fmt: skip
    content = body.encode() if isinstance(body, str) else body
    return api.call(
        "POST", logs_path(task_id, job_key, step_key), who,
        content=content, headers={**TEXT, **headers},
    )  # fmt: skip


def appended(api: Api, task_id: str, text: str, **kwargs: Any) -> dict[str, Any]:
    response = append(api, task_id, text, **kwargs)
    assert response.status_code == 201, response.text
    return dict(response.json())


def read(api: Api, task_id: str, who: str = "reader", **params: Any) -> httpx.Response:
    job_key, step_key = params.pop("job", "build"), params.pop("step", "clone")
    return api.call("GET", logs_path(task_id, job_key, step_key), who, params=params)


def running_task(api: Api) -> str:
    """A `deploy_task()` whose step build/clone runs."""
    task_id = str(api.create_task(org="acme")["id"])
    api.reported(task_id, {"status": "queued"}, step("build", "clone", "in_progress"))
    return task_id


def logs_position(api: Api) -> int:
    services: Services = api.client.app.state.services  # type: ignore[attr-defined]
    return int(services.logs.recorder.max_notification_id() or 0)


# ---------------------------------------------------------------- append and read


def test_text_round_trips_exactly_as_chunks_pages_and_download(api: Api) -> None:
    task_id = running_task(api)
    answers = [appended(api, task_id, text) for text in MULTILINGUAL]
    assert [a["seq"] for a in answers] == [1, 2, 3, 4]
    assert [a["size"] for a in answers] == [len(t.encode()) for t in MULTILINGUAL]
    assert all(isinstance(a["position"], int) for a in answers)
    page = read(api, task_id).json()
    assert [c["text"] for c in page["chunks"]] == MULTILINGUAL
    assert [c["seq"] for c in page["chunks"]] == [1, 2, 3, 4]
    assert page["next_after"] == 4 and page["step_status"] == "in_progress"
    assert page["log_chunks"] == 4 and page["log_bytes"] == sum(a["size"] for a in answers)
    download = read(api, task_id, format="text")
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/plain; charset=utf-8"
    assert download.content == "".join(MULTILINGUAL).encode()
    assert int(download.headers["content-length"]) == len(download.content)


def test_pages_follow_after_and_limit(api: Api) -> None:
    task_id = running_task(api)
    for n in range(5):
        appended(api, task_id, f"line {n}\n")
    first = read(api, task_id, limit=2).json()
    assert [c["text"] for c in first["chunks"]] == ["line 0\n", "line 1\n"]
    rest = read(api, task_id, after=first["next_after"]).json()
    assert [c["seq"] for c in rest["chunks"]] == [3, 4, 5] and rest["next_after"] == 5
    assert read(api, task_id, after=5).json()["chunks"] == []
    assert read(api, task_id, after=3, format="text").text == "line 3\nline 4\n"


def test_a_chunk_cut_inside_a_character_is_422(api: Api) -> None:
    task_id = running_task(api)
    whole = "编译".encode()
    position = logs_position(api)
    for cut in (whole[:2], whole[1:], b"\xff\xfe", b"\xed\xa0\x80"):  # cut, cut, junk, surrogate
        body = assert_problem(append(api, task_id, cut), 422)
        assert body["errors"][0]["loc"] == ["body"]
    assert logs_position(api) == position  # nothing stored
    assert appended(api, task_id, whole.decode())["size"] == 6


@pytest.mark.parametrize("body", ["", "a\x00b"])
def test_empty_chunks_and_nul_characters_are_422(api: Api, body: str) -> None:
    assert_problem(append(api, running_task(api), body), 422)


@pytest.mark.parametrize(
    "content_type", ["text/plain; charset=latin-1", "application/json", "text/html"]
)
def test_anything_but_utf_8_text_is_415(api: Api, content_type: str) -> None:
    response = append(api, running_task(api), "x", **{"Content-Type": content_type})
    assert_problem(response, 415)


def test_text_plain_without_a_charset_is_taken_as_utf_8(api: Api) -> None:
    task_id = running_task(api)
    assert appended(api, task_id, "ça\n", **{"Content-Type": "text/plain"})["size"] == 4
    assert appended(api, task_id, "x", **{"Content-Type": 'text/plain;charset="UTF-8"'})


def test_a_body_over_1_mib_is_413_with_or_without_content_length(api: Api) -> None:
    task_id = running_task(api)
    position = logs_position(api)
    assert_problem(append(api, task_id, b"a" * (MIB + 1)), 413)

    def chunked() -> Iterator[bytes]:
        for _ in range(32):
            yield b"b" * (64 * 1024)

    response = append(api, task_id, chunked())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_problem(response, 413)
    assert logs_position(api) == position
    assert appended(api, task_id, "c" * MIB)["size"] == MIB  # exactly the limit is fine


def test_text_past_the_steps_cap_is_kept_up_to_it_and_the_rest_recorded(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(log_max_bytes_per_step=10)
    task_id = running_task(api)
    assert appended(api, task_id, "12345678")["refused_bytes"] == 0
    over = appended(api, task_id, "ééé")
    assert (over["seq"], over["size"], over["refused_bytes"]) == (3, 2, 4)
    page = read(api, task_id).json()
    assert [c["text"] for c in page["chunks"]] == ["12345678", "é"]
    assert [(t["seq"], t["refused_bytes"]) for t in page["truncations"]] == [(3, 4)]
    assert (page["log_bytes"], page["log_refused_bytes"]) == (10, 4)
    download = read(api, task_id, format="text")
    assert download.text == "12345678é" and download.headers["x-log-refused-bytes"] == "4"
    # The task says the same: two chunks (the mark of refused text is none), 10 bytes
    # kept, 4 refused.
    assert page["log_chunks"] == 2
    assert step_totals(api, task_id)[("build", "clone")] == (2, 10, 4)


# ---------------------------------------------------------------- when


def test_a_step_that_never_started_is_409(api: Api) -> None:
    task_id = running_task(api)
    body = assert_problem(append(api, task_id, "too early", "deploy", "rollout"), 409)
    assert body["current_status"] == "pending"
    assert_problem(append(api, task_id, "too early", "build", "compile"), 409)


def test_late_logs_after_the_step_and_task_finished_are_accepted(api: Api) -> None:
    task_id = str(api.create_task(org="acme")["id"])
    api.finish(task_id)
    late = appended(api, task_id, "flushed late\n", job_key="deploy", step_key="rollout")
    assert late["seq"] == 1
    page = read(api, task_id, job="deploy", step="rollout").json()
    assert page["step_status"] == "done" and page["chunks"][0]["text"] == "flushed late\n"


def test_late_logs_of_an_attempt_that_backed_off_are_accepted(api: Api) -> None:
    task_id = running_task(api)
    task = api.reported(task_id, job("build", "backed_off"))
    clone = task["jobs"][0]["steps"][0]
    assert clone["status"] == "pending" and clone["started_at"] is None  # reset for the retry
    assert appended(api, task_id, "attempt 1, late\n")["seq"] == 1
    # compile never started in any attempt: still too early.
    assert_problem(append(api, task_id, "x", "build", "compile"), 409)


def test_a_refused_keyed_append_is_replayed_as_refused(api: Api) -> None:
    task_id = str(api.create_task(org="acme")["id"])
    key = {"Idempotency-Key": "early-1"}
    first = assert_problem(append(api, task_id, "early", **key), 409)
    api.reported(task_id, {"status": "queued"}, step("build", "clone", "in_progress"))
    again = append(api, task_id, "early", **key)
    assert assert_problem(again, 409) == first
    assert again.headers["idempotent-replayed"] == "true"


# ---------------------------------------------------------------- idempotency


def test_a_retried_keyed_append_answers_the_same_and_stores_nothing(api: Api) -> None:
    task_id = running_task(api)
    key = {"Idempotency-Key": "chunk-7"}
    first = append(api, task_id, "once\n", **key)
    assert first.status_code == 201
    position = logs_position(api)
    again = append(api, task_id, "once\n", **key)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert logs_position(api) == position
    assert read(api, task_id).json()["log_chunks"] == 1
    other = append(api, task_id, "once more\n", **key)
    assert_problem(other, 422)


def test_a_key_used_for_a_task_write_is_not_taken_for_a_log(api: Api) -> None:
    task_id = running_task(api)
    response = api.call(
        "POST", "/v1/tasks", json={**deploy_task(), "org": "acme"},
        headers={"Idempotency-Key": "shared"},
    )  # fmt: skip
    assert response.status_code == 201
    assert_problem(append(api, task_id, "x", **{"Idempotency-Key": "shared"}), 422)


# ---------------------------------------------------------------- who


def test_unknown_jobs_and_steps_are_404(api: Api) -> None:
    task_id = running_task(api)
    assert_problem(append(api, task_id, "x", "nope", "clone"), 404)
    assert_problem(append(api, task_id, "x", "build", "nope"), 404)
    assert_problem(read(api, task_id, job="build", step="nope"), 404)
    assert_problem(api.call("GET", logs_path(task_id, "nope") + "/stream", "reader"), 404)


def test_another_orgs_task_is_404_for_every_log_route(api: Api) -> None:
    task_id = running_task(api)
    appended(api, task_id, "secret\n")
    assert_problem(append(api, task_id, "x", who="intruder_writer"), 404)
    assert_problem(read(api, task_id, "intruder_writer"), 404)
    assert_problem(read(api, task_id, "intruder_admin", format="text"), 404)
    stream = api.call("GET", logs_path(task_id) + "/stream", "intruder_admin")
    assert_problem(stream, 404)


def test_only_writers_append(api: Api) -> None:
    task_id = running_task(api)
    for who in ("reader", "auditor"):
        assert_problem(append(api, task_id, "x", who=who), 403)


def test_a_system_steps_log_is_hidden_from_readers_and_shown_to_auditors_who_ask(
    api: Api,
) -> None:
    task_id = str(api.create_task(org="acme")["id"])
    api.reported(task_id, {"status": "queued"}, step("sync", "push", "in_progress"))
    assert appended(api, task_id, "pushed\n", job_key="sync", step_key="push")["seq"] == 1
    for who in ("reader", "writer", "auditor"):  # as if it did not exist, unless asked
        assert_problem(read(api, task_id, who, job="sync", step="push"), 404)
    assert_problem(read(api, task_id, "reader", job="sync", step="push", include_system=True), 403)
    for who in ("auditor", "admin"):
        page = read(api, task_id, who, job="sync", step="push", include_system=True)
        assert page.status_code == 200 and page.json()["chunks"][0]["text"] == "pushed\n"


# ---------------------------------------------------------------- isolation


class EventCounter:
    """Counts the events a recorder hands out (every read of a stream goes through it)."""

    def __init__(self, recorder: Any):
        self.recorder, self.original, self.count = recorder, recorder.select_events, 0

    def __enter__(self) -> EventCounter:
        def select(*args: Any, **kwargs: Any) -> Any:
            rows = self.original(*args, **kwargs)
            self.count += len(rows)
            return rows

        self.recorder.select_events = select
        return self

    def __exit__(self, *exc: object) -> None:
        self.recorder.select_events = self.original


def test_ten_thousand_chunks_leave_loading_the_task_as_it_was(api: Api) -> None:
    task_id = running_task(api)
    services: Services = api.client.app.state.services  # type: ignore[attr-defined]
    services.ledger.repository.cache = None  # every read loads the task from the store

    def task_events_loaded() -> int:
        with EventCounter(services.ledger.recorder) as counter:
            api.get_task(task_id, "reader")
        return counter.count

    before = task_events_loaded()
    assert before > 0
    # 10,000 chunks through the domain's rules, in one write (fast on every store)...
    log = StepLog.following(LoggedStep(UUID(task_id), "build", "clone", "x", True), None)
    for n in range(10_000):
        log.append(f"line {n}\n", cap_bytes=MIB, now=services.logs.clock())
    services.logs.save(*log.collect_events())
    # ... and a few through HTTP.
    for n in range(3):
        appended(api, task_id, f"http {n}\n")
    assert read(api, task_id).json()["log_chunks"] == 10_003
    assert task_events_loaded() == before


def step_totals(api: Api, task_id: str, **params: Any) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Each step's (log_chunks, log_bytes, log_refused_bytes), as GET /v1/tasks/{id} shows."""
    response = api.call("GET", f"/v1/tasks/{task_id}", "auditor", params=params)
    assert response.status_code == 200, response.text
    return {
        (j["key"], s["key"]): (s["log_chunks"], s["log_bytes"], s["log_refused_bytes"])
        for j in response.json()["jobs"]
        for s in j["steps"]
    }


def test_the_task_shows_each_steps_log_totals(api: Api) -> None:
    task_id = running_task(api)
    for text in MULTILINGUAL:
        appended(api, task_id, text)
    api.reported(task_id, step("build", "clone", "done"), step("build", "compile", "in_progress"))
    appended(api, task_id, "naïve café ✓\n", step_key="compile")
    appended(api, task_id, "😀\n", step_key="compile")

    totals = step_totals(api, task_id)

    # Bytes are UTF-8 bytes, not characters: the multi-byte text counts in full.
    clone_bytes = sum(len(text.encode()) for text in MULTILINGUAL)
    assert clone_bytes > sum(len(text) for text in MULTILINGUAL)
    assert totals[("build", "clone")] == (4, clone_bytes, 0)
    assert totals[("build", "compile")] == (2, len("naïve café ✓\n😀\n".encode()), 0)
    assert totals[("deploy", "rollout")] == (0, 0, 0)  # its job never started
    # The task as it was: the totals are the log's now, so a past view has none.
    past = step_totals(api, task_id, version=1)
    assert set(past.values()) == {(None, None, None)}


def test_per_step_totals_read_one_event_per_started_step_and_never_a_log(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = running_task(api)
    for text in MULTILINGUAL:
        appended(api, task_id, text)
    services: Services = api.client.app.state.services  # type: ignore[attr-defined]
    view = services.ledger.get_task(UUID(task_id))
    head_queries: list[int] = []

    def counting_heads(recorder: Any, stream_ids: Any) -> Any:
        head_queries.append(len(stream_ids))
        return latest_events(recorder, stream_ids)

    monkeypatch.setattr(log_totals, "latest_events", counting_heads)
    with EventCounter(services.logs.recorder) as log_reads:
        shown = log_totals.with_log_totals(view, services.logs)
    steps = {(j["key"], s["key"]): s for j in shown["jobs"] for s in j["steps"]}
    clone = steps[("build", "clone")]
    assert (clone["log_chunks"], clone["log_bytes"], clone["log_refused_bytes"]) == (
        4,
        sum(len(t.encode()) for t in MULTILINGUAL),
        0,
    )
    assert steps[("build", "compile")]["log_chunks"] == 0
    assert steps[("deploy", "rollout")]["log_bytes"] == 0
    # One query for the heads of build's two step logs; no log is replayed, and the
    # jobs that never started cost nothing.
    assert head_queries == [2]
    assert log_reads.count == 0


# ---------------------------------------------------------------- live


@dataclass
class Message:
    id: str | None = None
    event: str = "message"
    data: Any = None
    comment: str | None = None


def sse(lines: Iterator[str]) -> Iterator[Message]:
    """Server-Sent Events, parsed as a browser would (comments kept, for heartbeats)."""
    message, data = Message(), []
    for line in lines:
        if line == "":
            if data or message.event != "message":
                message.data = json.loads("\n".join(data)) if data else None
                yield message
            message, data = Message(), []
        elif line.startswith(":"):
            yield Message(comment=line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                message.id = value
            elif name == "event":
                message.event = value
            elif name == "data":
                data.append(value)


@dataclass
class Live:
    url: str
    tokens: dict[str, str]
    server: LiveServer
    clients: list[httpx.Client] = field(default_factory=list)

    def headers(self, who: str = "writer", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    def post(self, path: str, who: str = "writer", **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(who), **kwargs.pop("headers", {})}
        return httpx.post(f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def report(self, task_id: str, *transitions: dict[str, Any]) -> None:
        response = self.post(f"/v1/tasks/{task_id}/transitions", json={"transitions": transitions})
        assert response.status_code == 200, response.text

    def append(self, task_id: str, text: str) -> dict[str, Any]:
        response = self.post(logs_path(task_id), content=text.encode(), headers=TEXT)
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
def live(store_url: str, tmp_path) -> Iterator[Live]:  # type: ignore[no-untyped-def]
    server = start_server(
        settings_for(
            store_url, tmp_path, log_poll_seconds=0.02, log_follow_grace_seconds=0.2,
            sse_heartbeat_seconds=0.3,
        )
    )  # fmt: skip
    services = server.server.config.app.state.services  # type: ignore[union-attr]
    try:
        yield Live(server.url, issue_tokens(services.ledger), server)
    finally:
        server.server.should_exit = True
        server.thread.join(timeout=20)


def live_task(live: Live) -> str:
    response = live.post("/v1/tasks", json={**deploy_task(), "org": "acme"})
    assert response.status_code == 201, response.text
    task_id = str(response.json()["id"])
    live.report(task_id, {"status": "queued"}, step("build", "clone", "in_progress"))
    return task_id


class Follower(threading.Thread):
    """Reads a log's event stream in the background until it ends (or `stop_after`)."""

    def __init__(self, live: Live, task_id: str, stop_after: int | None = None, **headers: str):
        super().__init__(daemon=True)
        self.live, self.task_id, self.stop_after, self.headers = live, task_id, stop_after, headers
        self.messages: list[Message] = []
        self.connected = threading.Event()
        self.ended = False

    def run(self) -> None:
        url = f"{self.live.url}{logs_path(self.task_id)}/stream"
        headers = self.live.headers("reader", **self.headers)
        with httpx.stream("GET", url, headers=headers, timeout=20) as response:
            assert response.status_code == 200
            self.connected.set()
            for message in sse(response.iter_lines()):
                if message.comment is not None:
                    continue
                if message.event == "end":
                    self.ended = True
                    return
                self.messages.append(message)
                if self.stop_after is not None and len(self.messages) >= self.stop_after:
                    return

    @property
    def chunks(self) -> list[tuple[int, str]]:
        return [(int(m.id or 0), m.data["text"]) for m in self.messages if m.event == "message"]


def test_a_follower_sees_every_chunk_once_and_the_stream_ends_with_the_step(live: Live) -> None:
    task_id = live_task(live)
    follower = Follower(live, task_id)
    follower.start()
    assert follower.connected.wait(10)
    texts = [f"{n}: {MULTILINGUAL[n % len(MULTILINGUAL)]}" for n in range(40)]
    for text in texts:
        live.append(task_id, text)
    live.report(task_id, step("build", "clone", "done"))
    follower.join(timeout=20)
    assert not follower.is_alive() and follower.ended
    assert follower.chunks == [(n + 1, text) for n, text in enumerate(texts)]


def test_a_reconnect_with_last_event_id_continues_without_repeats(live: Live) -> None:
    task_id = live_task(live)
    texts = [f"chunk {n}\n" for n in range(12)]
    for text in texts[:8]:
        live.append(task_id, text)
    first = Follower(live, task_id, stop_after=5)
    first.start()
    first.join(timeout=20)
    assert [seq for seq, _ in first.chunks] == [1, 2, 3, 4, 5]
    # Reconnect where the first connection stopped; the rest arrives, then the step ends.
    second = Follower(live, task_id, **{"Last-Event-ID": first.messages[-1].id or ""})
    second.start()
    assert second.connected.wait(10)
    for text in texts[8:]:
        live.append(task_id, text)
    live.report(task_id, step("build", "clone", "done"))
    second.join(timeout=20)
    assert second.ended
    assert [text for _, text in first.chunks + second.chunks] == texts
    assert [seq for seq, _ in second.chunks] == list(range(6, 13))


def test_an_idle_stream_sends_heartbeats(live: Live) -> None:
    task_id = live_task(live)
    url = f"{live.url}{logs_path(task_id)}/stream"
    with httpx.stream("GET", url, headers=live.headers("reader"), timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in sse(response.iter_lines()):
            if message.comment == "heartbeat":
                break


def test_a_bad_last_event_id_is_422(api: Api) -> None:
    task_id = running_task(api)
    response = api.call(
        "GET", logs_path(task_id) + "/stream", "reader", headers={"Last-Event-ID": "x"}
    )
    assert_problem(response, 422)


def test_a_stream_of_a_finished_step_replays_its_log_and_ends(live: Live) -> None:
    task_id = live_task(live)
    live.append(task_id, "all there is\n")
    live.report(task_id, step("build", "clone", "done"))
    follower = Follower(live, task_id)
    follower.start()
    follower.join(timeout=20)
    assert follower.ended and follower.chunks == [(1, "all there is\n")]


def test_a_log_stream_ends_soon_after_its_token_is_revoked(live: Live) -> None:
    task_id = live_task(live)
    live.append(task_id, "before\n")
    issued = live.post(
        "/v1/api-keys", "platform", json={"org": "acme", "role": "reader", "name": "tail"}
    )
    assert issued.status_code == 201, issued.text
    key = issued.json()
    url = f"{live.url}{logs_path(task_id)}/stream"
    watcher = {"Authorization": f"Bearer {key['token']}"}

    with httpx.stream("GET", url, headers=watcher, timeout=10) as response:
        assert response.status_code == 200
        received = sse(response.iter_lines())
        # Connected, the log replayed, idle (the step still runs).
        first = next(m for m in received if m.comment is None)
        assert first.data["text"] == "before\n"
        next(m for m in received if m.comment == "heartbeat")
        # Revoke the key the stream was opened with.
        revoke = httpx.delete(
            f"{live.url}/v1/api-keys/{key['id']}", headers=live.headers("platform")
        )
        assert revoke.status_code == 204, revoke.text
        # The stream ends on its own, though the step still runs; heartbeats keep coming
        # while it lasts.
        deadline = time.monotonic() + 10
        rest = []
        for message in received:
            assert time.monotonic() < deadline, "the stream outlived its token"
            rest.append(message)

    assert rest and rest[-1].comment == "the token was revoked", rest
    assert not [m for m in rest if m.event == "end"]  # not the end of the log: no `end`
    assert_problem(httpx.get(url, headers=watcher, timeout=10), 401)
