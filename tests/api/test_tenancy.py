"""A task of another org is 404 on every path, exactly as if it did not exist."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import AUTHOR, Api, assert_problem, step

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def task_paths(task_id: str) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """Every task path, with a request its own org could make successfully."""
    base = f"/v1/tasks/{task_id}"
    yield "GET", base, None
    yield "GET", f"{base}?version=1", None
    yield "GET", f"{base}?as_of=2999-01-01T00:00:00Z", None
    yield "GET", f"{base}/timeline", None
    yield "GET", f"{base}/timeline?after_version=1&limit=5", None
    for fmt in ("json", "svg", "mermaid"):
        yield "GET", f"{base}/graph?format={fmt}", None
    yield "POST", f"{base}/transitions", {"transitions": [step("deploy", "rollout", "canceled")]}
    yield "POST", f"{base}/transitions", {"transitions": [step("nope", "nope", "done")]}
    yield (
        "POST",
        f"{base}/transitions",
        {"transitions": [{"status": "queued"}], "expected_version": 99},
    )
    yield "POST", f"{base}/cancel", {"reason": "mine now"}
    yield "POST", f"{base}/rerun", {"author": AUTHOR, "force": True}


def comparable(response: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    return response.status_code, response.headers["content-type"], response.json()


@pytest.mark.parametrize("intruder", ["intruder_writer", "intruder_admin"])
def test_another_orgs_task_is_404_on_every_path(api: Api, intruder: str) -> None:
    task_id = api.create_task()["id"]
    api.fail(task_id)  # failed: rerun would succeed for its own org
    version, before = api.version(task_id), api.store_position()

    for method, path, body in task_paths(task_id):
        answer = api.call(method, path, intruder, json=body)
        absent = api.call(method, path.replace(task_id, UNKNOWN), intruder, json=body)
        assert_problem(answer, 404)
        assert comparable(answer) == comparable(absent), (method, path)

    assert api.version(task_id) == version and api.store_position() == before
    assert api.get_task(task_id, "reader")["status"] == "failed"


def test_include_system_does_not_reveal_another_orgs_task(api: Api) -> None:
    task_id = api.create_task()["id"]

    for path in ("", "/timeline", "/graph"):
        answer = api.call("GET", f"/v1/tasks/{task_id}{path}?include_system=true", "intruder_admin")
        absent = api.call("GET", f"/v1/tasks/{UNKNOWN}{path}?include_system=true", "intruder_admin")
        assert_problem(answer, 404)
        assert comparable(answer) == comparable(absent)


def test_a_keyed_request_on_another_orgs_task_is_404_too(api: Api) -> None:
    task_id = api.create_task()["id"]
    before = api.store_position()

    for attempt in range(2):
        response = api.call(
            "POST", f"/v1/tasks/{task_id}/cancel", "intruder_writer",
            headers={"Idempotency-Key": "evil-1"}, json={"reason": f"try {attempt}"},
        )  # fmt: skip
        assert_problem(response, 404)
    assert api.store_position() == before
    assert api.get_task(task_id)["status"] == "pending"


def test_another_orgs_task_cannot_be_an_origin(api: Api) -> None:
    theirs = api.create_task()["id"]
    body = {"type": "app.x", "title": "X", "kind": "immediate", "author": AUTHOR}

    answer = api.call(
        "POST", "/v1/tasks", "intruder_writer", json={**body, "origin_task_id": theirs}
    )
    absent = api.call(
        "POST", "/v1/tasks", "intruder_writer", json={**body, "origin_task_id": UNKNOWN}
    )

    first, second = assert_problem(answer, 422), assert_problem(absent, 422)
    assert first["errors"][0]["loc"] == second["errors"][0]["loc"] == ["body", "origin_task_id"]
    assert first["detail"].replace(theirs, UNKNOWN) == second["detail"]


def test_each_org_sees_only_its_own_tasks(api: Api) -> None:
    ours = api.create_task()["id"]
    theirs = api.create_task("intruder_writer")["id"]

    assert api.get_task(theirs, "intruder_admin")["org"] == "evil"
    for who in ("reader", "writer", "auditor", "admin"):
        assert_problem(api.call("GET", f"/v1/tasks/{theirs}", who), 404)
        assert api.get_task(ours, who)["org"] == "acme"


def test_an_id_of_something_else_is_no_task(api: Api) -> None:
    key_id = api.call("GET", "/v1/api-keys", "admin").json()["items"][0]["id"]
    before = api.store_position()

    for method, path, body in task_paths(key_id):
        answer = api.call(method, path, "platform", json=body)
        absent = api.call(method, path.replace(key_id, UNKNOWN), "platform", json=body)
        assert_problem(answer, 404)
        assert comparable(answer) == comparable(absent), (method, path)
    assert api.store_position() == before
