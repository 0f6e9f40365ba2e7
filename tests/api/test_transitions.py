"""POST /v1/tasks/{id}/transitions: atomic lists, no-op retries, refusals that explain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from tests.api.conftest import (
    DONE_RUN,
    QUEUED,
    Api,
    assert_problem,
    error_locs,
    job,
    step,
)


def test_a_full_run_ends_done_with_every_derived_change(api: Api) -> None:
    task_id = api.create_task()["id"]

    # The executor queues the task: jobs without needs are queued with it.
    queued = api.reported(task_id, QUEUED)
    assert queued["status"] == "queued" and queued["queued_at"] is not None
    assert [j["status"] for j in queued["jobs"]] == ["queued", "pending"]

    # The first step starts: the job and the task are in progress, the runtime runs.
    running = api.reported(task_id, step("build", "clone", "in_progress"))
    assert running["status"] == "in_progress" and running["started_at"] is not None
    assert running["jobs"][0]["status"] == "in_progress" and running["jobs"][0]["attempt"] == 1
    assert running["duration_seconds"] is not None

    # The rest of the run, in one list.
    done = api.reported(task_id, *DONE_RUN[2:])
    assert done["status"] == "done" and done["failure"] is None
    assert done["finished_at"] is not None and done["duration_seconds"] >= 0
    for job_view in done["jobs"]:
        assert job_view["status"] == "done" and job_view["finished_at"] is not None
        assert all(s["status"] == "done" for s in job_view["steps"])
    assert done["version"] > running["version"] > queued["version"]
    assert done["position"] > running["position"] > queued["position"]


def test_the_answer_is_the_task_as_read_afterwards(api: Api) -> None:
    task_id = api.create_task()["id"]
    answer = api.reported(task_id, QUEUED, step("build", "clone", "in_progress"))
    read = api.get_task(task_id, "writer")

    assert isinstance(answer["position"], int)
    for volatile in ("duration_seconds", "jobs"):
        answer.pop(volatile), read.pop(volatile)
    assert answer == read


def test_a_list_whose_third_item_is_illegal_stores_nothing(api: Api) -> None:
    task_id = api.create_task()["id"]
    version, before = api.version(task_id), api.store_position()

    response = api.report(
        task_id,
        QUEUED,
        step("build", "clone", "in_progress"),
        step("build", "compile", "in_progress"),
    )

    body = assert_problem(response, 409)
    assert body["index"] == 2
    assert body["target"] == {"job": "build", "step": "compile"}
    assert body["current_status"] == "pending"
    assert "step compile cannot start: step clone is in progress" in body["detail"]
    assert api.version(task_id) == version and api.store_position() == before
    assert api.get_task(task_id)["status"] == "pending"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (job("deploy", "in_progress"), "deploy cannot start yet: it needs build (queued)"),
        (job("build", "done"), "finishes by itself when its steps finish"),
        ({"status": "in_progress"}, "task cannot be set in progress"),
        (step("deploy", "rollout", "done"), "rollout cannot go from pending to done"),
    ],
    ids=["needs", "job-done", "task-status", "step-skips"],
)
def test_a_refusal_says_which_item_and_why(api: Api, item: dict, reason: str) -> None:
    task_id = api.create_task()["id"]
    api.reported(task_id, QUEUED)
    version = api.version(task_id)

    body = assert_problem(api.report(task_id, item), 409)

    assert body["index"] == 0 and reason in body["detail"], body
    assert body["target"] == {"job": item.get("job"), "step": item.get("step")}
    assert isinstance(body["current_status"], str)
    assert api.version(task_id) == version


@pytest.mark.parametrize(
    ("item", "loc"),
    [
        (job("nope", "in_progress"), ("body", "transitions", 1, "job")),
        (step("build", "nope", "in_progress"), ("body", "transitions", 1, "step")),
        (step("deploy", "clone", "in_progress"), ("body", "transitions", 1, "step")),
        ({"step": "clone", "status": "in_progress"}, ("body", "transitions", 1, "step")),
    ],
    ids=["job", "step", "step-of-other-job", "step-without-job"],
)
def test_an_unknown_job_or_step_is_422_and_stores_nothing(api: Api, item: dict, loc: tuple) -> None:
    task_id = api.create_task()["id"]
    before = api.store_position()

    body = assert_problem(api.report(task_id, QUEUED, item), 422)

    assert loc in error_locs(body), body
    assert body["index"] == 1
    assert api.store_position() == before and api.version(task_id) == 1


def test_repeating_a_transition_is_a_no_op(api: Api) -> None:
    task_id = api.create_task()["id"]
    first = api.reported(task_id, QUEUED, step("build", "clone", "in_progress"))
    before = api.store_position()

    again = api.reported(task_id, QUEUED, step("build", "clone", "in_progress"))
    job_again = api.reported(task_id, job("build", "in_progress"))

    assert again["version"] == job_again["version"] == first["version"]
    assert again["position"] == first["position"]
    assert api.store_position() == before


def test_expected_version_must_match(api: Api) -> None:
    task_id = api.create_task()["id"]
    before = api.store_position()

    body = assert_problem(api.report(task_id, QUEUED, expected_version=7), 409)
    assert "version" in body["detail"] and "7" in body["detail"]
    assert api.store_position() == before

    accepted = api.report(task_id, QUEUED, expected_version=1)
    assert accepted.status_code == 200 and accepted.json()["version"] > 1


def test_a_failed_step_fails_its_job_cancels_dependants_and_fails_the_task(api: Api) -> None:
    task_id = api.create_task()["id"]
    error = {"message": "exit code 2", "code": "E_BUILD", "user_facing": True}

    task = api.reported(
        task_id,
        step("build", "clone", "in_progress"),
        step("build", "clone", "failed", error=error),
        step("sync", "push", "in_progress"),
        step("sync", "push", "done"),
    )

    build, deploy = task["jobs"]
    assert build["status"] == "failed" and build["error"] == error
    assert [s["status"] for s in build["steps"]] == ["failed", "canceled"]
    assert deploy["status"] == "canceled" and deploy["steps"][0]["status"] == "canceled"
    assert task["status"] == "failed"
    failure = task["failure"]
    assert failure["reason"] == "job" and "exit code 2" in failure["message"]
    assert failure["job"] == "build" and failure["step"] == "clone" and failure["error"] == error


def test_a_backed_off_job_resets_its_steps_and_retries_as_a_new_attempt(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.reported(task_id, step("build", "clone", "in_progress"), step("build", "clone", "done"))

    backed_off = api.reported(
        task_id,
        job("build", "backed_off", retry_at="2026-11-28T10:05:00Z",
            error={"message": "registry unavailable"}),
    )  # fmt: skip
    build = backed_off["jobs"][0]
    assert backed_off["status"] == "backed_off" and build["status"] == "backed_off"
    assert build["retry_at"] == "2026-11-28T10:05:00Z"
    assert build["error"]["message"] == "registry unavailable"
    assert [s["status"] for s in build["steps"]] == ["pending", "pending"]

    retried = api.reported(task_id, step("build", "clone", "in_progress"))
    assert retried["jobs"][0]["attempt"] == 2 and retried["status"] == "in_progress"
    assert retried["jobs"][0]["retry_at"] is None


def test_reported_time_is_when_it_occurred(api: Api) -> None:
    task_id = api.create_task()["id"]
    task = api.reported(
        task_id, step("build", "clone", "in_progress", at="2026-11-28T11:00:00+01:00")
    )

    assert task["jobs"][0]["steps"][0]["started_at"] == "2026-11-28T10:00:00Z"
    started = [e for e in api.timeline(task_id) if e["type"] == "StepStarted"]
    assert started[0]["occurred_at"] == "2026-11-28T10:00:00Z"
    assert started[0]["recorded_at"] != started[0]["occurred_at"]


def test_a_canceled_task_refuses_reports_saying_so(api: Api) -> None:
    task_id = api.create_task()["id"]
    assert api.call("POST", f"/v1/tasks/{task_id}/cancel").json()["status"] == "canceled"
    version = api.version(task_id)

    for item in (QUEUED, step("build", "clone", "in_progress"), job("deploy", "failed")):
        body = assert_problem(api.report(task_id, item), 409)
        assert "canceled" in body["detail"] and body["current_status"] is not None, body
    assert api.version(task_id) == version


def test_a_timed_out_task_refuses_reports_saying_so(api: Api) -> None:
    task_id = api.create_task(timeout_seconds=1)["id"]
    api.reported(task_id, step("build", "clone", "in_progress"))
    # The timeout enforcer is a background worker, not an HTTP route: record it directly.
    assert api.ledger.time_out(UUID(task_id), now=datetime.now(UTC) + timedelta(seconds=2))

    task = api.get_task(task_id, "reader")
    assert task["status"] == "timed_out" and task["failure"]["reason"] == "timeout"
    assert all(j["status"] == "timed_out" for j in task["jobs"])
    version = api.version(task_id)
    for item in (step("build", "clone", "done"), QUEUED, job("deploy", "in_progress")):
        body = assert_problem(api.report(task_id, item), 409)
        assert "timed out" in body["detail"], body
    assert api.version(task_id) == version


def test_a_task_ended_by_a_timed_out_job_refuses_reports(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.reported(task_id, job("build", "timed_out"), job("sync", "timed_out"))
    assert api.get_task(task_id)["status"] == "timed_out"

    body = assert_problem(api.report(task_id, QUEUED), 409)

    assert "timed out" in body["detail"]


def test_an_immediate_task_accepts_no_reports(api: Api) -> None:
    task = api.created(
        {
            "type": "project.member.add",
            "title": "Add Bob",
            "kind": "immediate",
            "author": {"id": "u", "name": "U", "kind": "support"},
        }
    )

    problem = assert_problem(api.report(task["id"], QUEUED), 409)

    assert "immediate" in problem["detail"]
    assert api.version(task["id"]) == 1


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"transitions": []}, ("body", "transitions")),
        ({"transitions": [{"status": "exploded"}]}, ("body", "transitions", 0, "status")),
        ({"transitions": [{"status": "queued", "at": "2026-11-28T10:00:00"}]},
         ("body", "transitions", 0, "at")),
        ({"transitions": [{"status": "queued", "at": "0001-01-01T00:30:00+01:00"}]},
         ("body", "transitions", 0, "at")),
        ({"transitions": [{"status": "queued", "at": "9999-12-31T23:30:00-01:00"}]},
         ("body", "transitions", 0, "at")),
        ({"transitions": [{"status": "queued"}], "expected_version": -1},
         ("body", "expected_version")),
        ({"transitions": [job("build", "failed", error={"code": "E"})]},
         ("body", "transitions", 0, "error", "message")),
        ({"transitions": [{"status": "queued"}] * 1001}, ("body", "transitions")),
        ({}, ("body", "transitions")),
    ],
    ids=["empty", "status", "naive-at", "at-before-year-1", "at-after-9999", "version",
         "error-message", "too-many", "missing"],
)  # fmt: skip
def test_an_invalid_report_is_422_naming_the_field(api: Api, payload: dict, loc: tuple) -> None:
    task_id = api.create_task()["id"]
    before = api.store_position()

    response = api.call("POST", f"/v1/tasks/{task_id}/transitions", json=payload)

    assert loc in error_locs(assert_problem(response, 422))
    assert api.store_position() == before
