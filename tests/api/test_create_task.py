"""POST /v1/tasks: what is stored, what is answered, and what is refused (nothing stored)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.api.conftest import (
    Api,
    assert_problem,
    deploy_task,
    error_locs,
    without_log_totals,
)

TASK_FIELDS = {
    "id", "org", "type", "title", "kind", "status", "author", "project", "origin_task_id",
    "rerun_of", "reruns", "forced", "silent", "rerunnable", "timeout_seconds", "labels",
    "cancel_requested", "created_at", "queued_at", "started_at", "finished_at",
    "duration_seconds", "failure", "version", "position", "jobs",
}  # fmt: skip
JOB_FIELDS = {
    "key", "name", "needs", "status", "system", "attempt", "retry_at", "started_at",
    "finished_at", "duration_seconds", "error", "steps",
}  # fmt: skip
STEP_FIELDS = {
    "key", "name", "status", "system", "started_at", "finished_at", "duration_seconds",
    "error", "downgraded",
}  # fmt: skip


def utc(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


def minimal(**fields: Any) -> dict[str, Any]:
    return {
        "type": "app.build",
        "title": "Build",
        "kind": "executable",
        "author": {"id": "u-1", "name": "Ann", "kind": "user"},
        "jobs": [{"key": "build", "name": "Build", "steps": [{"key": "run", "name": "Run"}]}],
        **fields,
    }


def jobs_plan(*jobs: tuple[str, list[str]]) -> list[dict[str, Any]]:
    return [
        {"key": key, "name": key.title(), "needs": needs, "steps": [{"key": "s", "name": "S"}]}
        for key, needs in jobs
    ]


def test_create_answers_201_with_location_and_the_stored_task(api: Api) -> None:
    response = api.call("POST", "/v1/tasks", json=deploy_task())

    assert response.status_code == 201, response.text
    task = response.json()
    assert response.headers["location"] == f"/v1/tasks/{task['id']}"
    assert set(task) >= TASK_FIELDS
    assert task["org"] == "acme"
    assert task["status"] == "pending" and task["version"] == 1
    assert task["author"] == {"id": "u-42", "name": "Alice", "kind": "user"}
    assert task["labels"] == {"app": "shop", "env": "prod"} and task["project"] == "shop"
    assert isinstance(task["position"], int) and task["position"] > 0
    utc(task["created_at"])
    assert task["queued_at"] is task["started_at"] is task["finished_at"] is None
    assert task["duration_seconds"] is None and task["failure"] is None
    # The answer hides the system job from its writer, like every regular read.
    assert [j["key"] for j in task["jobs"]] == ["build", "deploy"]
    for job in task["jobs"]:
        assert set(job) >= JOB_FIELDS and job["status"] == "pending" and job["attempt"] == 0
        for step in job["steps"]:
            assert set(step) >= STEP_FIELDS and step["status"] == "pending"
    # GET adds the steps' live log totals, which write answers leave null (cheap writes).
    read = api.call("GET", response.headers["location"], "reader").json()
    assert without_log_totals(read) == task
    assert {s["log_chunks"] for j in read["jobs"] for s in j["steps"]} == {0}


def test_defaults_are_applied(api: Api) -> None:
    task = api.created(minimal())

    assert task["project"] is None and task["origin_task_id"] is None
    assert task["silent"] is False and task["rerunnable"] is True
    assert task["timeout_seconds"] == 3600 and task["labels"] == {}
    assert task["rerun_of"] is None and task["reruns"] == [] and task["forced"] is False
    assert task["cancel_requested"] is False
    assert task["jobs"][0]["needs"] == [] and task["jobs"][0]["system"] is False
    assert task["jobs"][0]["steps"][0]["system"] is False


def test_every_given_field_is_kept(api: Api) -> None:
    origin = api.created(minimal())
    task = api.create_task(
        **minimal(
            org="acme",
            project="shop",
            origin_task_id=origin["id"],
            silent=True,
            rerunnable=False,
            timeout_seconds=60,
            labels={"app": "shop"},
        )
    )

    assert task["origin_task_id"] == origin["id"] and task["project"] == "shop"
    assert task["silent"] is True and task["rerunnable"] is False
    assert task["timeout_seconds"] == 60 and task["labels"] == {"app": "shop"}
    assert api.get_task(task["id"], "reader") == task


def test_an_immediate_task_is_done_when_recorded(api: Api) -> None:
    body = {**minimal(kind="immediate", type="project.member.add", title="Add Bob")}
    del body["jobs"]
    task = api.created(body)

    assert task["kind"] == "immediate" and task["status"] == "done"
    assert task["jobs"] == [] and task["finished_at"] is not None
    assert task["duration_seconds"] is None and task["timeout_seconds"] is None


def test_each_write_answers_a_position_that_increases(api: Api) -> None:
    positions = [api.create_task()["position"] for _ in range(3)]
    task_id = api.create_task()["id"]
    positions.append(api.reported(task_id, {"status": "queued"})["position"])
    positions.append(api.call("POST", f"/v1/tasks/{task_id}/cancel").json()["position"])

    assert all(isinstance(p, int) for p in positions)
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_missing_required_fields_are_named(api: Api) -> None:
    before = api.store_position()
    body = assert_problem(api.call("POST", "/v1/tasks", json={}), 422)

    assert {("body", f) for f in ("type", "title", "kind", "author")} <= set(error_locs(body))
    assert api.store_position() == before


@pytest.mark.parametrize(
    ("jobs", "loc"),
    [
        (jobs_plan(("a", []), ("b", ["zzz"])), ("body", "jobs", 1, "needs", 0)),
        (jobs_plan(("a", ["b"]), ("b", ["a"])), ("body", "jobs", 0, "needs")),
        (jobs_plan(("a", ["a"])), ("body", "jobs", 0, "needs", 0)),
        (jobs_plan(("a", []), ("a", [])), ("body", "jobs", 1, "key")),
        (
            [{"key": "a", "name": "A", "steps": [{"key": "s", "name": "S"}] * 2}],
            ("body", "jobs", 0, "steps", 1, "key"),
        ),
        ([{"key": "a", "name": "A", "steps": []}], ("body", "jobs", 0, "steps")),
        ([{"key": "A B", "name": "A", "steps": [{"key": "s", "name": "S"}]}],
         ("body", "jobs", 0, "key")),
        ([], ("body", "jobs")),
    ],
    ids=["unknown-need", "cycle", "self-need", "duplicate-job", "duplicate-step", "no-steps",
         "bad-key", "no-jobs"],
)  # fmt: skip
def test_an_invalid_plan_is_refused_naming_the_field(
    api: Api, jobs: list[dict[str, Any]], loc: tuple[Any, ...]
) -> None:
    before = api.store_position()
    body = assert_problem(api.call("POST", "/v1/tasks", json=minimal(jobs=jobs)), 422)

    assert loc in error_locs(body), body
    assert api.store_position() == before


def test_an_immediate_task_with_jobs_is_refused(api: Api) -> None:
    before = api.store_position()
    body = assert_problem(api.call("POST", "/v1/tasks", json=minimal(kind="immediate")), 422)

    assert ("body", "jobs") in error_locs(body)
    assert api.store_position() == before


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"type": "App Deploy"}, ("body", "type")),
        ({"kind": "eventual"}, ("body", "kind")),
        ({"author": {"id": "u", "name": "U", "kind": "robot"}}, ("body", "author", "kind")),
        ({"timeout_seconds": 0}, ("body", "timeout_seconds")),
        ({"timeout_seconds": 7 * 24 * 3600 + 1}, ("body", "timeout_seconds")),
        ({"title": ""}, ("body", "title")),
        ({"origin_task_id": "not-a-uuid"}, ("body", "origin_task_id")),
        ({"org": "Not An Org"}, ("body", "org")),
        ({"labels": {"app": 3}}, ("body", "labels", "app")),
    ],
    ids=["type", "kind", "author-kind", "timeout-0", "timeout-8d", "empty-title", "origin",
         "org", "label-value"],
)  # fmt: skip
def test_an_invalid_field_is_refused_and_named(
    api: Api, fields: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    before = api.store_position()
    body = assert_problem(api.call("POST", "/v1/tasks", json=minimal(**fields)), 422)

    assert loc in error_locs(body), body
    assert api.store_position() == before


def test_the_longest_timeout_is_seven_days(api: Api) -> None:
    assert api.created(minimal(timeout_seconds=7 * 24 * 3600))["timeout_seconds"] == 604800


def test_limits_are_inclusive(api: Api) -> None:
    task = api.create_task(
        **minimal(
            title="t" * 500,
            labels={f"k{i}": "v" for i in range(32)},
            jobs=[
                {
                    "key": f"j{i}",
                    "name": "J",
                    "steps": [{"key": f"s{k}", "name": "S"} for k in range(2)],
                }
                for i in range(199)
            ]
            + [
                {
                    "key": "wide",
                    "name": "W",
                    "steps": [{"key": f"s{k}", "name": "S"} for k in range(200)],
                }
            ],
        )
    )

    assert len(task["title"]) == 500 and len(task["labels"]) == 32
    assert len(task["jobs"]) == 200 and len(task["jobs"][-1]["steps"]) == 200


def test_an_immediate_task_has_no_timeout(api: Api) -> None:
    body = minimal(kind="immediate", timeout_seconds=60)
    del body["jobs"]
    problem = assert_problem(api.call("POST", "/v1/tasks", json=body), 422)

    assert ("body", "timeout_seconds") in error_locs(problem)


def test_the_origin_must_exist_in_the_same_org(api: Api) -> None:
    foreign = api.create_task("intruder_writer")
    before = api.store_position()

    for origin in (foreign["id"], "00000000-0000-4000-8000-000000000000"):
        body = assert_problem(
            api.call("POST", "/v1/tasks", json=minimal(origin_task_id=origin)), 422
        )
        assert ("body", "origin_task_id") in error_locs(body)
        assert "evil" not in body["detail"]

    assert api.store_position() == before


def test_an_origin_that_is_no_task_is_refused(api: Api) -> None:
    key_id = api.call("GET", "/v1/api-keys", "admin").json()["items"][0]["id"]
    body = assert_problem(api.call("POST", "/v1/tasks", json=minimal(origin_task_id=key_id)), 422)

    assert ("body", "origin_task_id") in error_locs(body)
