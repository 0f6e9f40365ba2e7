"""Idempotency-Key: a retry gets the first answer again and stores nothing."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.api.conftest import (
    AUTHOR,
    QUEUED,
    Api,
    LiveServer,
    assert_problem,
    deploy_task,
    step,
)


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def create(api: Api, key: str, who: str = "writer", **fields: Any) -> httpx.Response:
    return api.call("POST", "/v1/tasks", who, json={**deploy_task(), **fields}, headers=keyed(key))


def same_answer(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.json() == first.json()
    assert again.headers.get("location") == first.headers.get("location")


def test_a_retried_create_gets_the_first_answer_and_stores_nothing(api: Api) -> None:
    first = create(api, "create-1")
    assert first.status_code == 201, first.text
    before = api.store_position()

    for _ in range(3):
        same_answer(first, create(api, "create-1"))

    assert api.store_position() == before
    assert api.tasks_created().count(UUID(first.json()["id"])) == 1
    assert len(api.timeline(first.json()["id"])) == 1


def test_a_replay_after_the_task_moved_on_still_answers_the_creation(api: Api) -> None:
    first = create(api, "create-2")
    api.reported(first.json()["id"], QUEUED, step("build", "clone", "in_progress"))

    again = create(api, "create-2")

    same_answer(first, again)
    assert again.json()["status"] == "pending" and again.json()["version"] == 1


def test_the_same_body_in_another_spelling_is_the_same_request(api: Api) -> None:
    first = create(api, "create-3")
    respelled = json.dumps(dict(reversed(list(deploy_task().items()))), indent=2).encode()

    again = api.call("POST", "/v1/tasks", content=respelled,
                     headers={**keyed("create-3"), "Content-Type": "application/json"})  # fmt: skip

    same_answer(first, again)


def test_the_same_key_with_another_body_is_422(api: Api) -> None:
    first = create(api, "create-4")
    before = api.store_position()

    for body in ({"title": "Another title"}, {"labels": {}}):
        assert_problem(create(api, "create-4", **body), 422)
    other_path = api.call(
        "POST", f"/v1/tasks/{first.json()['id']}/cancel", headers=keyed("create-4")
    )
    assert_problem(other_path, 422)

    assert api.store_position() == before
    same_answer(first, create(api, "create-4"))


@pytest.mark.parametrize("key", ["", "   ", "k" * 201])
def test_an_empty_or_over_long_key_is_400(api: Api, key: str) -> None:
    before = api.store_position()

    assert_problem(create(api, key), 400)

    assert api.store_position() == before


def test_a_key_of_200_characters_is_fine(api: Api) -> None:
    first = create(api, "k" * 200)

    assert first.status_code == 201
    same_answer(first, create(api, "k" * 200))


def test_keys_are_scoped_to_the_caller(api: Api) -> None:
    ours = create(api, "shared-key")
    theirs = create(api, "shared-key", "intruder_writer")
    admins = create(api, "shared-key", "admin")

    assert ours.status_code == theirs.status_code == admins.status_code == 201
    assert theirs.json()["org"] == "evil" and ours.json()["org"] == "acme"
    assert len({ours.json()["id"], theirs.json()["id"], admins.json()["id"]}) == 3
    # A tenant's key never answers with another tenant's task.
    assert_problem(api.call("GET", f"/v1/tasks/{ours.json()['id']}", "intruder_writer"), 404)


def test_a_retried_report_is_answered_again_without_applying_twice(api: Api) -> None:
    task_id = api.create_task()["id"]
    body = {"transitions": [QUEUED, step("build", "clone", "in_progress")]}
    path = f"/v1/tasks/{task_id}/transitions"
    first = api.call("POST", path, json=body, headers=keyed("report-1"))
    assert first.status_code == 200, first.text
    api.reported(task_id, step("build", "clone", "done"))
    version, before = api.version(task_id), api.store_position()

    again = api.call("POST", path, json=body, headers=keyed("report-1"))

    same_answer(first, again)
    assert again.headers.get("idempotent-replayed") == "true"
    assert api.version(task_id) == version and api.store_position() == before


def test_a_refused_keyed_request_is_refused_again_on_retry(api: Api) -> None:
    task_id = api.create_task()["id"]
    body = {"transitions": [step("build", "compile", "in_progress")]}
    path = f"/v1/tasks/{task_id}/transitions"
    first = api.call("POST", path, json=body, headers=keyed("refused-1"))
    assert_problem(first, 409)
    # The state changes so that the same request would now be accepted ...
    api.reported(task_id, step("build", "clone", "in_progress"), step("build", "clone", "done"))
    version = api.version(task_id)

    # ... but the retry is answered as the first attempt was.
    again = api.call("POST", path, json=body, headers=keyed("refused-1"))

    same_answer(first, again)
    assert api.version(task_id) == version


def test_a_keyed_422_refusal_is_answered_again(api: Api) -> None:
    first = create(api, "invalid-1", origin_task_id="00000000-0000-4000-8000-000000000000")
    assert_problem(first, 422)

    same_answer(
        first, create(api, "invalid-1", origin_task_id="00000000-0000-4000-8000-000000000000")
    )
    assert_problem(create(api, "invalid-1"), 422)


def test_a_retried_cancel_and_rerun_store_nothing(api: Api) -> None:
    task_id = api.create_task()["id"]
    canceled = api.call(
        "POST", f"/v1/tasks/{task_id}/cancel", json={"reason": "x"}, headers=keyed("c")
    )
    assert canceled.status_code == 200
    body = {"author": AUTHOR, "force": True}
    rerun = api.call("POST", f"/v1/tasks/{task_id}/rerun", json=body, headers=keyed("r"))
    assert rerun.status_code == 201
    before = api.store_position()

    same_answer(canceled, api.call("POST", f"/v1/tasks/{task_id}/cancel", json={"reason": "x"},
                                   headers=keyed("c")))  # fmt: skip
    same_answer(
        rerun, api.call("POST", f"/v1/tasks/{task_id}/rerun", json=body, headers=keyed("r"))
    )

    assert api.store_position() == before
    assert api.get_task(task_id)["reruns"] == [rerun.json()["id"]]


def test_a_retried_key_issue_returns_the_key_but_never_the_token_again(api: Api) -> None:
    body = {"org": "acme", "role": "reader", "name": "ci"}
    first = api.call("POST", "/v1/api-keys", "admin", json=body, headers=keyed("key-1"))
    assert first.status_code == 201 and first.json()["token"]
    before = api.store_position()

    again = api.call("POST", "/v1/api-keys", "admin", json=body, headers=keyed("key-1"))

    assert again.status_code == 201 and again.json()["token"] is None
    assert {k: v for k, v in again.json().items() if k != "token"} == {
        k: v for k, v in first.json().items() if k != "token"
    }
    assert again.headers["location"] == first.headers["location"]
    assert api.store_position() == before


def test_a_keyed_no_op_is_answered_again_after_the_task_moved_on(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.reported(task_id, step("build", "clone", "in_progress"))
    body = {"transitions": [step("build", "clone", "in_progress")]}  # already so: a no-op
    path = f"/v1/tasks/{task_id}/transitions"
    first = api.call("POST", path, json=body, headers=keyed("noop-1"))
    assert first.status_code == 200
    api.reported(task_id, step("build", "clone", "done"))

    again = api.call("POST", path, json=body, headers=keyed("noop-1"))

    assert again.status_code == 200, again.text
    same_answer(first, again)


# ---------------------------------------------------------------- concurrency


class HeldCommand:
    """Holds the first call of a ledger command inside the service until released: the
    real command then runs on the real store (nothing is mocked; only the moment it
    runs is chosen). Later calls run at once."""

    def __init__(self, ledger: Any, command: str):
        self.inside = threading.Event()
        self.release = threading.Event()
        self.run = getattr(ledger, command)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.inside.is_set():
            self.inside.set()
            assert self.release.wait(timeout=30), "never released"
        return self.run(*args, **kwargs)


@contextmanager
def holding(monkeypatch: pytest.MonkeyPatch, ledger: Any, command: str) -> Iterator[HeldCommand]:
    held = HeldCommand(ledger, command)
    monkeypatch.setattr(ledger, command, held)
    try:
        yield held
    finally:
        held.release.set()  # a failed assertion must not leave a request hanging


def in_background(send: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(send()), daemon=True)
    thread.start()
    return thread, answers


@pytest.mark.parametrize(
    ("command", "path", "body", "status"),
    [
        ("create_task", "/v1/tasks", deploy_task(), 201),
        ("report", "/v1/tasks/{task_id}/transitions", {"transitions": [QUEUED]}, 200),
    ],
    ids=["create", "report"],
)
def test_the_same_key_while_the_first_request_runs_is_409_then_replayed(
    api: Api,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    path: str,
    body: dict[str, Any],
    status: int,
) -> None:
    url = path.format(task_id=api.create_task()["id"])

    def send() -> httpx.Response:
        return api.call("POST", url, json=body, headers=keyed("held-1"))

    with holding(monkeypatch, api.ledger, command) as held:
        # The first request is inside the service, in the ledger's command, not yet stored.
        first, answers = in_background(send)
        assert held.inside.wait(timeout=30), "the first request never reached the command"
        before = api.store_position()

        # A retry with its key meanwhile is told to come back later, and stores nothing.
        duplicate = send()
        problem = assert_problem(duplicate, 409)
        assert "in flight" in f"{problem['title']} {problem['detail']}".lower(), problem
        assert int(duplicate.headers["retry-after"]) >= 1
        assert api.store_position() == before

    # Released, the first request completes as if it had been alone ...
    first.join(timeout=30)
    [answer] = answers
    assert answer.status_code == status, answer.text
    assert "idempotent-replayed" not in answer.headers
    # ... and a later retry is answered with its answer, storing nothing.
    after_first = api.store_position()
    again = send()
    same_answer(answer, again)
    assert again.headers.get("idempotent-replayed") == "true"
    assert api.store_position() == after_first


@pytest.fixture
def concurrent_store(store_url: str) -> str:
    if store_url.startswith("memory"):
        pytest.skip("concurrency across service processes needs a shared store")
    return store_url


def test_200_concurrent_duplicates_create_exactly_one_task(
    concurrent_store: str,
    make_api: Callable[..., Api],
    live_servers: Callable[[int], list[LiveServer]],
) -> None:
    api = make_api()
    servers = live_servers(2)  # two service processes on one store
    token = api.tokens["writer"]

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            return await asyncio.gather(*(
                client.post(
                    f"{servers[i % 2].url}/v1/tasks",
                    json=deploy_task(),
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "one-deploy"},
                )
                for i in range(200)
            ))  # fmt: skip

    responses = asyncio.run(send_all())

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    created = [r for r in responses if r.status_code == 201]
    assert created, statuses
    assert len({r.json()["id"] for r in created}) == 1
    assert all(r.json() == created[0].json() for r in created)
    for refused in (r for r in responses if r.status_code == 409):
        assert "in flight" in refused.json()["title"].lower() + refused.json()["detail"]
    assert api.tasks_created() == [UUID(created[0].json()["id"])]
    # Once settled, every retry gets the same answer.
    same_answer(created[0], create(api, "one-deploy"))


def test_concurrent_keyed_reports_apply_once(
    concurrent_store: str,
    make_api: Callable[..., Api],
    live_servers: Callable[[int], list[LiveServer]],
) -> None:
    api = make_api()
    servers = live_servers(2)
    task_id = api.create_task()["id"]
    token = api.tokens["writer"]
    body = {
        "transitions": [
            QUEUED,
            step("build", "clone", "in_progress"),
            step("build", "clone", "done"),
        ]
    }

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(
                client.post(
                    f"{servers[i % 2].url}/v1/tasks/{task_id}/transitions",
                    json=body,
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "one-report"},
                )
                for i in range(50)
            ))  # fmt: skip

    responses = asyncio.run(send_all())

    assert {r.status_code for r in responses} <= {200, 409}
    accepted = [r.json() for r in responses if r.status_code == 200]
    assert accepted and all(a == accepted[0] for a in accepted)
    events = api.timeline(task_id, include_system="true")
    assert [e["type"] for e in events].count("StepStarted") == 1
    assert api.version(task_id) == accepted[0]["version"]
