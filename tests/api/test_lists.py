"""GET /v1/tasks (the activity feed), origin chains and caused trees, through HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import Api, assert_problem

SYSTEM_FAILURE: list[dict[str, Any]] = [
    {"job": "sync", "step": "push", "status": "in_progress"},
    {"job": "sync", "step": "push", "status": "failed", "error": {"message": "registry down"}},
    {"job": "build", "status": "canceled"},
]


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def listed(api: Api, query: str = "", who: str = "reader", min_position: int = 0) -> list[str]:
    separator = "&" if query else ""
    return ids(api.call("GET", f"/v1/tasks?{query}{separator}min_position={min_position}", who))


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """The app with its projection runners running (the shared fixture runs none)."""
    return make_api(run_projections=True)


def expect_unavailable(api: Api, response: Any) -> None:
    """Asserts a deliberate 503 (the suite otherwise refuses every 5xx) and lets it pass."""
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "1"
    api.responses.remove(response)


@pytest.fixture
def tasks(api: Api) -> dict[str, dict[str, Any]]:
    """Six tasks of acme with different fields, created one after the other (and one of evil)."""
    made: dict[str, dict[str, Any]] = {}
    made["deploy"] = api.create_task(title="deploy")
    made["build"] = api.create_task(
        title="build", type="app.build", project="blog", labels={"app": "blog", "env": "dev"},
        author={"id": "bot-1", "name": "Wodbot", "kind": "system"},
    )  # fmt: skip
    made["member"] = api.create_task(
        title="member", type="project.member.add", kind="immediate", jobs=[], labels={},
        origin_task_id=made["deploy"]["id"],
    )  # fmt: skip
    made["quiet"] = api.create_task(title="quiet", silent=True)
    made["failed"] = api.create_task(title="failed", project=None, labels={"app": "shop"})
    response = api.report(made["failed"]["id"], *SYSTEM_FAILURE)
    assert response.json()["status"] == "failed", response.text
    rerun = api.call(
        "POST", f"/v1/tasks/{made['failed']['id']}/rerun",
        json={"author": {"id": "s-1", "name": "Sam", "kind": "support"}},
    )  # fmt: skip
    assert rerun.status_code == 201, rerun.text
    made["rerun"] = rerun.json()
    made["evil"] = api.create_task("intruder_writer", title="evil")
    made["last_position"] = {"position": made["evil"]["position"]}
    return made


def test_the_feed_is_newest_first_and_leaves_silent_tasks_out(api: Api, tasks: Any) -> None:
    at = tasks["last_position"]["position"]
    order = ["rerun", "failed", "member", "build", "deploy"]
    assert listed(api, min_position=at) == [tasks[n]["id"] for n in order]
    with_silent = listed(api, "include_silent=true", min_position=at)
    assert with_silent == [
        tasks[n]["id"] for n in ["rerun", "failed", "quiet", "member", "build", "deploy"]
    ]


FILTER_CASES = [
    ("project=shop", ["member", "deploy"]),
    ("status=failed", ["failed"]),
    ("status=pending&status=done", ["rerun", "member", "build", "deploy"]),
    ("type=app.build", ["build"]),
    ("kind=immediate", ["member"]),
    ("author_id=bot-1", ["build"]),
    ("author_kind=support", ["rerun"]),
    ("origin_task_id={deploy}", ["member"]),
    ("rerun_of={failed}", ["rerun"]),
    ("label=app:shop", ["rerun", "failed", "deploy"]),
    ("label=app:shop&label=env:prod", ["deploy"]),
    ("label=app:blog&status=pending&type=app.build&project=blog", ["build"]),
    ("created_after={build_at}", ["rerun", "failed", "member"]),
    ("created_before={build_at}", ["deploy"]),
    ("created_after={deploy_at}&created_before={failed_at}&include_silent=true",
     ["quiet", "member", "build"]),
    ("kind=executable&author_kind=user&include_silent=true", ["failed", "quiet", "deploy"]),
]  # fmt: skip


def test_every_filter_of_the_contract(api: Api, tasks: Any) -> None:
    made = {n: t for n, t in tasks.items() if "id" in t}
    values = {n: t["id"] for n, t in made.items()} | {
        f"{n}_at": t["created_at"].replace("+00:00", "Z") for n, t in made.items()
    }
    for query, expected in FILTER_CASES:
        at = tasks["last_position"]["position"]
        got = listed(api, query.format(**values), min_position=at)
        assert got == [tasks[n]["id"] for n in expected], query


def test_pages_follow_the_cursor_to_the_end(api: Api, tasks: Any) -> None:
    at = tasks["last_position"]["position"]
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        response = api.call("GET", f"/v1/tasks?limit=2&min_position={at}{cursor}", "reader")
        seen += ids(response)
        next_cursor = response.json()["next_cursor"]
        if next_cursor is None:
            break
        cursor = f"&cursor={next_cursor}"
    assert seen == listed(api, min_position=at) and len(seen) == 5


def test_each_org_sees_only_its_own_tasks(api: Api, tasks: Any) -> None:
    at = tasks["last_position"]["position"]
    assert listed(api, who="intruder_writer", min_position=at) == [tasks["evil"]["id"]]
    assert listed(api, "org=evil", who="platform", min_position=at) == [tasks["evil"]["id"]]
    # A platform token must name the org; an org token may only name its own.
    response = api.call("GET", "/v1/tasks", "platform")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"loc": ["query", "org"], "msg": "Field required"}]
    assert api.call("GET", "/v1/tasks?org=evil", "reader").status_code == 403
    assert api.call("GET", "/v1/tasks?org=acme", "reader").status_code == 200


def test_system_failure_details_are_for_auditors_who_ask(api: Api, tasks: Any) -> None:
    at = tasks["last_position"]["position"]
    query = f"/v1/tasks?status=failed&min_position={at}"
    [regular] = api.call("GET", query, "reader").json()["items"]
    assert regular["failure"] == {
        "reason": "system",
        "message": regular["failure"]["message"],
        "job": None, "step": None, "error": None,
    }  # fmt: skip
    assert api.call("GET", f"{query}&include_system=true", "reader").status_code == 403
    [audited] = api.call("GET", f"{query}&include_system=true", "auditor").json()["items"]
    assert audited["failure"]["job"] == "sync" and audited["failure"]["step"] == "push"


def test_summaries_are_the_task_without_its_jobs(api: Api, tasks: Any) -> None:
    at = tasks["last_position"]["position"]
    [item] = api.call("GET", f"/v1/tasks?type=app.build&min_position={at}", "reader").json()[
        "items"
    ]
    task = api.call("GET", f"/v1/tasks/{item['id']}", "reader").json()
    assert item == {k: v for k, v in task.items() if k != "jobs"}


INVALID_QUERIES = [
    "label=app",
    "label=:shop",
    "cursor=not-a-cursor",
    "limit=501",
    "limit=0",
    "created_after=2026-01-01T00:00:00",
    "status=sleeping",
    "kind=sometimes",
    "min_position=-1",
]


def test_invalid_queries_are_422_problems(api: Api) -> None:
    for query in INVALID_QUERIES:
        assert_problem(api.call("GET", f"/v1/tasks?{query}", "reader"), 422)


def test_origin_chain_and_caused_tasks(api: Api) -> None:
    # root → child → grandchild, and root → sibling (immediate).
    root = api.create_task(title="root")
    child = api.create_task(title="child", origin_task_id=root["id"])
    sibling = api.create_task(title="sibling", kind="immediate", jobs=[], origin_task_id=root["id"])
    grandchild = api.create_task(title="grandchild", origin_task_id=child["id"], silent=True)
    at = grandchild["position"]

    def titles(path: str, key: str) -> list[str]:
        response = api.call(
            "GET", f"{path}{'&' if '?' in path else '?'}min_position={at}", "reader"
        )
        assert response.status_code == 200, response.text
        return [item["title"] for item in response.json()[key]]

    assert titles(f"/v1/tasks/{grandchild['id']}/origin-chain", "chain") == [
        "root", "child", "grandchild",
    ]  # fmt: skip
    assert titles(f"/v1/tasks/{root['id']}/caused", "items") == ["child", "sibling"]
    assert titles(f"/v1/tasks/{root['id']}/caused?depth=all", "items") == [
        "child", "sibling", "grandchild",
    ]  # fmt: skip
    assert titles(f"/v1/tasks/{sibling['id']}/caused?depth=all", "items") == []
    # Another org's task is not found, as if it did not exist.
    for path in ("origin-chain", "caused"):
        response = api.call("GET", f"/v1/tasks/{root['id']}/{path}", "intruder_writer")
        assert response.status_code == 404
    assert api.call("GET", f"/v1/tasks/{root['id']}/caused?depth=2", "reader").status_code == 422


def test_origin_chain_waits_for_a_task_the_projection_has_not_reached(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(run_projections=False, min_position_timeout_seconds=0.2)
    task = api.create_task()
    # Not projected yet (no runner): not a 404, since the task exists; 503, retry.
    response = api.call("GET", f"/v1/tasks/{task['id']}/origin-chain", "reader")
    expect_unavailable(api, response)
    api.client.app.state.services.projections.start()  # type: ignore[attr-defined]
    response = api.call("GET", f"/v1/tasks/{task['id']}/origin-chain", "reader")
    assert [t["id"] for t in response.json()["chain"]] == [task["id"]]


def test_min_position_waits_for_the_projection_then_gives_up_with_503(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(run_projections=False, min_position_timeout_seconds=0.5)
    task = api.create_task()
    path = f"/v1/tasks?min_position={task['position']}"
    # Nothing follows the store: after the timeout, 503 with Retry-After.
    started = time.monotonic()
    response = api.call("GET", path, "reader")
    assert time.monotonic() - started >= 0.5
    expect_unavailable(api, response)
    # A read that is waiting when a runner starts gets its answer.
    answers: list[Any] = []
    reader = threading.Thread(target=lambda: answers.append(api.call("GET", path, "reader")))
    reader.start()
    api.client.app.state.services.projections.start()  # type: ignore[attr-defined]
    reader.join()
    assert ids(answers[0]) == [task["id"]]
