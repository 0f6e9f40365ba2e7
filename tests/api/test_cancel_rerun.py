"""POST /v1/tasks/{id}/cancel and /rerun (including forced reruns)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from tests.api.conftest import AUTHOR, QUEUED, Api, assert_problem, error_locs, job, step


def cancel(api: Api, task_id: str, **body: str) -> dict:
    response = api.call("POST", f"/v1/tasks/{task_id}/cancel", json=body or None)
    assert response.status_code == 200, response.text
    return dict(response.json())


def rerun(api: Api, task_id: str, **body: object):  # type: ignore[no-untyped-def]
    return api.call("POST", f"/v1/tasks/{task_id}/rerun", json={"author": AUTHOR, **body})


# ---------------------------------------------------------------- cancel


@pytest.mark.parametrize("queued", [False, True], ids=["pending", "queued"])
def test_cancel_before_anything_runs_cancels_at_once(api: Api, queued: bool) -> None:
    task_id = api.create_task()["id"]
    if queued:
        api.reported(task_id, QUEUED)

    task = cancel(api, task_id, reason="wrong branch")

    assert task["status"] == "canceled" and task["cancel_requested"] is True
    assert isinstance(task["position"], int) and task["finished_at"] is not None
    everything = api.get_task(task_id, include_system=True)
    assert all(j["status"] == "canceled" for j in everything["jobs"])
    assert all(s["status"] == "canceled" for j in everything["jobs"] for s in j["steps"])
    requested = [e for e in api.timeline(task_id) if e["type"] == "TaskCancelRequested"]
    assert requested[0]["data"]["reason"] == "wrong branch"


def test_cancel_of_a_running_task_waits_for_running_work(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.reported(task_id, step("build", "clone", "in_progress"))

    # Cancel: what has not started is canceled at once, the running job goes on.
    task = cancel(api, task_id)
    assert task["status"] == "canceling" and task["cancel_requested"] is True
    build, deploy = task["jobs"]
    assert build["status"] == "in_progress" and deploy["status"] == "canceled"
    assert api.get_task(task_id, include_system=True)["jobs"][2]["status"] == "canceled"

    # Nothing new may start while canceling.
    body = assert_problem(api.report(task_id, step("build", "compile", "in_progress")), 409)
    assert "cancel" in body["detail"]

    # A second cancel is a harmless retry.
    assert cancel(api, task_id)["status"] == "canceling"

    # The executor reports the running step canceled: the task is canceled.
    ended = api.reported(task_id, step("build", "clone", "canceled"))
    assert ended["status"] == "canceled" and ended["jobs"][0]["status"] == "canceled"


def test_a_running_step_may_still_finish_while_canceling(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.reported(task_id, step("build", "clone", "in_progress"))
    cancel(api, task_id)

    task = api.reported(task_id, step("build", "clone", "done"))

    assert task["jobs"][0]["steps"][0]["status"] == "done"
    assert task["status"] in ("canceling", "canceled")


@pytest.mark.parametrize("end", ["done", "failed", "canceled"])
def test_cancel_of_a_finished_task_is_a_conflict(api: Api, end: str) -> None:
    task_id = api.create_task()["id"]
    if end == "done":
        api.finish(task_id)
    elif end == "failed":
        api.fail(task_id)
    else:
        cancel(api, task_id)
    version, before = api.version(task_id), api.store_position()

    body = assert_problem(api.call("POST", f"/v1/tasks/{task_id}/cancel"), 409)

    assert body["current_status"] == end and end.replace("_", " ") in body["detail"]
    assert api.version(task_id) == version and api.store_position() == before


def test_cancel_of_an_immediate_task_is_a_conflict(api: Api) -> None:
    task = api.created({"type": "user.add", "title": "Add", "kind": "immediate", "author": AUTHOR})

    assert_problem(api.call("POST", f"/v1/tasks/{task['id']}/cancel"), 409)


def test_cancel_needs_no_body_but_refuses_a_bad_one(api: Api) -> None:
    task_id = api.create_task()["id"]

    body = assert_problem(
        api.call("POST", f"/v1/tasks/{task_id}/cancel", json={"reason": "x" * 1001}), 422
    )
    assert ("body", "reason") in error_locs(body)
    body = assert_problem(api.call("POST", f"/v1/tasks/{task_id}/cancel", json={"why": "x"}), 422)
    assert ("body", "why") in error_locs(body)
    assert api.version(task_id) == 1

    response = api.call("POST", f"/v1/tasks/{task_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled"


# ---------------------------------------------------------------- rerun


def test_rerun_creates_a_new_task_linked_both_ways(api: Api) -> None:
    origin = api.created(
        {"type": "app.create", "title": "Create", "kind": "immediate", "author": AUTHOR}
    )
    old = api.create_task(origin_task_id=origin["id"], timeout_seconds=120, silent=True)
    api.fail(old["id"])

    response = rerun(api, old["id"])

    assert response.status_code == 201, response.text
    new = response.json()
    assert response.headers["location"] == f"/v1/tasks/{new['id']}"
    assert new["id"] != old["id"] and isinstance(new["position"], int)
    assert new["rerun_of"] == old["id"] and new["forced"] is False
    assert new["status"] == "pending" and new["version"] == 1
    assert new["author"] == AUTHOR and new["origin_task_id"] == origin["id"]
    for same in ("org", "type", "title", "project", "labels", "timeout_seconds", "kind"):
        assert new[same] == old[same], same
    full_new = api.get_task(new["id"], include_system=True)
    full_old = api.get_task(old["id"], include_system=True)
    plan = [
        (j["key"], j["needs"], j["system"], [s["key"] for s in j["steps"]])
        for j in full_new["jobs"]
    ]
    assert plan == [(j["key"], j["needs"], j["system"], [s["key"] for s in j["steps"]])
                    for j in full_old["jobs"]]  # fmt: skip
    assert all(j["status"] in ("pending",) for j in full_new["jobs"])
    assert full_old["reruns"] == [new["id"]] and full_old["status"] == "failed"
    rerun_event = api.timeline(old["id"])[-1]
    assert rerun_event["type"] == "TaskRerun"
    assert rerun_event["data"]["rerun_task_id"] == new["id"]


def test_a_canceled_or_timed_out_task_can_be_rerun(api: Api) -> None:
    canceled = api.create_task()["id"]
    cancel(api, canceled)
    timed_out = api.create_task(timeout_seconds=1)["id"]
    api.reported(timed_out, step("build", "clone", "in_progress"))
    api.ledger.time_out(UUID(timed_out), now=datetime.now(UTC) + timedelta(seconds=2))

    for task_id in (canceled, timed_out):
        response = rerun(api, task_id)
        assert response.status_code == 201, response.text
        assert response.json()["rerun_of"] == task_id


@pytest.mark.parametrize("state", ["pending", "running", "done"])
def test_rerun_in_another_status_is_a_conflict_with_the_reason(api: Api, state: str) -> None:
    task_id = api.create_task()["id"]
    if state == "running":
        api.reported(task_id, step("build", "clone", "in_progress"))
    elif state == "done":
        api.finish(task_id)
    version, before = api.version(task_id), api.store_position()

    body = assert_problem(rerun(api, task_id), 409)

    assert "failed, timed out or canceled" in body["detail"], body
    assert api.version(task_id) == version and api.store_position() == before


def test_a_task_that_is_not_rerunnable_cannot_be_rerun(api: Api) -> None:
    task_id = api.create_task(rerunnable=False)["id"]
    api.fail(task_id)
    before = api.store_position()

    body = assert_problem(rerun(api, task_id), 409)

    assert "not rerunnable" in body["detail"] and body["current_status"] == "failed"
    assert api.store_position() == before


def test_an_immediate_task_cannot_be_rerun(api: Api) -> None:
    task = api.created({"type": "user.add", "title": "Add", "kind": "immediate", "author": AUTHOR})

    body = assert_problem(rerun(api, task["id"]), 409)

    assert "immediate" in body["detail"]


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({}, ("body", "author")),
        ({"author": {"id": "u", "name": "U"}}, ("body", "author", "kind")),
        ({"author": AUTHOR, "force": "maybe"}, ("body", "force")),
        ({"author": AUTHOR, "rerun_of": None}, ("body", "rerun_of")),
    ],
    ids=["no-author", "author-kind", "force", "server-owned"],
)
def test_an_invalid_rerun_is_422(api: Api, payload: dict, loc: tuple) -> None:
    task_id = api.create_task()["id"]
    api.fail(task_id)
    before = api.store_position()

    response = api.call("POST", f"/v1/tasks/{task_id}/rerun", json=payload)

    assert loc in error_locs(assert_problem(response, 422))
    assert api.store_position() == before


def test_a_forced_rerun_downgrades_user_facing_failures_and_ends_done_with_warnings(
    api: Api,
) -> None:
    old = api.create_task()["id"]
    api.fail(old)
    response = rerun(api, old, force=True)
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["forced"] is True and new["rerun_of"] == old

    user_facing = {"message": "config has a typo", "code": "E_CFG", "user_facing": True}
    task = api.reported(
        new["id"],
        step("build", "clone", "in_progress"),
        step("build", "clone", "failed", error=user_facing),
        step("build", "compile", "in_progress"),
        step("build", "compile", "done"),
        step("deploy", "rollout", "in_progress"),
        step("deploy", "rollout", "done"),
        step("sync", "push", "in_progress"),
        step("sync", "push", "done"),
    )

    clone = task["jobs"][0]["steps"][0]
    assert clone["status"] == "done_with_warnings" and clone["downgraded"] is True
    assert clone["error"] == user_facing
    assert task["jobs"][0]["status"] == "done_with_warnings"
    assert task["status"] == "done_with_warnings" and task["failure"] is None
    finished = next(e for e in api.timeline(new["id"]) if e["type"] == "StepFinished")
    assert finished["data"]["downgraded"] is True and finished["data"]["error"] == user_facing


def test_a_forced_rerun_still_fails_on_internal_errors(api: Api) -> None:
    old = api.create_task()["id"]
    api.fail(old)
    new = rerun(api, old, force=True).json()["id"]

    task = api.reported(
        new,
        step("build", "clone", "in_progress"),
        step("build", "clone", "failed", error={"message": "segfault", "user_facing": False}),
        job("sync", "canceled"),
    )

    assert task["jobs"][0]["steps"][0]["status"] == "failed"
    assert task["jobs"][0]["steps"][0]["downgraded"] is False
    assert task["status"] == "failed"


def test_a_rerun_can_itself_be_rerun(api: Api) -> None:
    first = api.create_task()["id"]
    api.fail(first)
    second = rerun(api, first).json()["id"]
    api.fail(second)

    third = rerun(api, second).json()

    assert third["rerun_of"] == second
    assert api.get_task(first)["reruns"] == [second]
    assert api.get_task(second)["reruns"] == [third["id"]]
