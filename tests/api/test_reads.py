"""GET a task (now, as of a version or a moment, with or without system work), its
timeline and its graph (JSON, SVG, Mermaid)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import (
    AUTHOR,
    QUEUED,
    Api,
    assert_problem,
    error_locs,
    step,
)

# Every name of the system work in `deploy_task()` and `scanned_task()`.
SYSTEM_WORDS = ("sync", "Sync registry", "push", "Push", "scan", "Secret scan", "scanner")
EVENT_TYPES = {
    "TaskCreated", "TaskQueued", "JobQueued", "JobStarted", "StepStarted", "StepFinished",
    "JobBackedOff", "JobFinished", "TaskCancelRequested", "TaskTimedOut", "TaskFinished",
    "TaskRerun", "TaskStatusChanged",
}  # fmt: skip


def scanned_task() -> dict[str, Any]:
    """A task whose regular job has a system step (a secret scan) between two steps."""
    return {
        "type": "app.build",
        "title": "Build shop",
        "kind": "executable",
        "author": AUTHOR,
        "jobs": [
            {
                "key": "build",
                "name": "Build",
                "steps": [
                    {"key": "clone", "name": "Clone"},
                    {"key": "scan", "name": "Secret scan", "system": True},
                    {"key": "compile", "name": "Compile"},
                ],
            },
            {
                "key": "ship",
                "name": "Ship",
                "needs": ["build"],
                "steps": [{"key": "upload", "name": "Upload"}],
            },
        ],
    }


def fail_in_system_step(api: Api) -> str:
    task_id = api.created(scanned_task())["id"]
    api.reported(
        task_id,
        step("build", "clone", "in_progress"),
        step("build", "clone", "done"),
        step("build", "scan", "in_progress"),
        step("build", "scan", "failed", error={"message": "scanner crashed", "code": "E_SCAN"}),
    )
    return str(task_id)


def shows_system_work(document: Any) -> list[str]:
    text = document if isinstance(document, str) else json.dumps(document)
    return [word for word in SYSTEM_WORDS if word in text]


# ---------------------------------------------------------------- the task now


def test_an_unknown_task_is_404(api: Api) -> None:
    for path in ("", "/timeline", "/graph", "/graph?format=svg"):
        response = api.call(
            "GET", f"/v1/tasks/00000000-0000-4000-8000-000000000000{path}", "reader"
        )
        assert "no such task" in assert_problem(response, 404)["detail"]


def test_a_malformed_task_id_is_422(api: Api) -> None:
    body = assert_problem(api.call("GET", "/v1/tasks/not-a-uuid", "reader"), 422)

    assert ("path", "task_id") in error_locs(body)


def test_a_read_sees_every_acknowledged_write(api: Api) -> None:
    task_id = api.create_task()["id"]
    for item in (QUEUED, step("build", "clone", "in_progress"), step("build", "clone", "done")):
        written = api.reported(task_id, item)
        read = api.get_task(task_id, "reader")
        assert (read["version"], read["position"]) == (written["version"], written["position"])


# ---------------------------------------------------------------- system work


def test_readers_never_see_system_jobs_or_steps(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.reported(
        task_id, step("sync", "push", "in_progress"), step("build", "clone", "in_progress")
    )
    scanned = api.created(scanned_task())["id"]
    api.reported(scanned, step("build", "clone", "in_progress"), step("build", "clone", "done"),
                 step("build", "scan", "in_progress"))  # fmt: skip

    for who in ("reader", "writer", "auditor", "admin", "platform"):
        for tid in (task_id, scanned):
            task = api.get_task(tid, who)
            assert not shows_system_work(task), (who, task)
            events = api.timeline(tid, who)
            assert not shows_system_work(events), (who, events)
            for fmt in ("json", "svg", "mermaid"):
                graph = api.call("GET", f"/v1/tasks/{tid}/graph", who, params={"format": fmt})
                assert graph.status_code == 200 and not shows_system_work(graph.text), (who, fmt)


@pytest.mark.parametrize("who", ["reader", "writer"])
def test_include_system_is_refused_to_readers_and_writers(api: Api, who: str) -> None:
    task_id = api.create_task()["id"]

    for path in ("", "/timeline", "/graph", "/graph?format=mermaid"):
        separator = "&" if "?" in path else "?"
        url = f"/v1/tasks/{task_id}{path}{separator}include_system=true"
        assert_problem(api.call("GET", url, who), 403)


@pytest.mark.parametrize("who", ["auditor", "admin", "platform"])
def test_auditors_and_admins_see_system_work_when_they_ask(api: Api, who: str) -> None:
    task_id = api.create_task()["id"]
    api.reported(task_id, step("sync", "push", "in_progress"))

    task = api.get_task(task_id, who, include_system="true")
    assert [j["key"] for j in task["jobs"]] == ["build", "deploy", "sync"]
    assert task["jobs"][2]["system"] is True and task["jobs"][2]["steps"][0]["system"] is True
    events = api.timeline(task_id, who, include_system="true")
    assert any(e["type"] == "StepStarted" and e["data"]["step"] == "push" for e in events)
    graph = api.call("GET", f"/v1/tasks/{task_id}/graph?include_system=true", who).json()
    assert {
        "key": "sync",
        "name": "Sync registry",
        "status": "in_progress",
        "system": True,
    } in graph["nodes"]
    for fmt in ("svg", "mermaid"):
        picture = api.call(
            "GET", f"/v1/tasks/{task_id}/graph?format={fmt}&include_system=true", who
        )
        assert "Sync registry" in picture.text


def test_a_failure_in_a_system_step_is_internal_for_readers(api: Api) -> None:
    task_id = fail_in_system_step(api)

    for who in ("reader", "writer", "auditor"):
        task = api.get_task(task_id, who)
        assert task["status"] == "failed"
        assert task["failure"]["reason"] == "system" and task["failure"]["message"]
        assert {k: v for k, v in task["failure"].items() if v is not None} == {
            "reason": "system", "message": task["failure"]["message"]
        }  # fmt: skip
        build = task["jobs"][0]
        assert [s["key"] for s in build["steps"]] == ["clone", "compile"]
        assert build["status"] == "failed" and build["error"] is None
        assert not shows_system_work(task) and "E_SCAN" not in json.dumps(task)
        events = api.timeline(task_id, who)
        assert not shows_system_work(events) and "E_SCAN" not in json.dumps(events)
        assert events[-1]["data"]["failure"] == {
            "reason": "system",
            "message": task["failure"]["message"],
        }


def test_a_failure_in_a_system_step_is_detailed_for_auditors_who_ask(api: Api) -> None:
    task_id = fail_in_system_step(api)

    for who in ("auditor", "admin"):
        failure = api.get_task(task_id, who, include_system="true")["failure"]
        assert failure["reason"] == "system" and failure["message"]
        assert failure["job"] == "build" and failure["step"] == "scan"
        assert failure["error"]["message"] == "scanner crashed"
        last = api.timeline(task_id, who, include_system="true")[-1]
        assert last["type"] == "TaskFinished" and last["data"]["failure"]["step"] == "scan"


def test_a_failed_system_job_shows_only_an_internal_reason(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.reported(
        task_id,
        step("sync", "push", "in_progress"),
        step("sync", "push", "failed", error={"message": "disk full"}),
        *(step(j, s, st)
          for j, s in (("build", "clone"), ("build", "compile"), ("deploy", "rollout"))
          for st in ("in_progress", "done")),
    )  # fmt: skip

    task = api.get_task(task_id, "reader")
    assert task["status"] == "failed" and [j["status"] for j in task["jobs"]] == ["done", "done"]
    assert task["failure"] == {"reason": "system", "message": task["failure"]["message"],
                               "job": None, "step": None, "error": None}  # fmt: skip
    detailed = api.get_task(task_id, "auditor", include_system="true")["failure"]
    assert detailed["job"] == "sync" and detailed["error"] == {"message": "disk full", "code": None,
                                                              "user_facing": False}  # fmt: skip


# ---------------------------------------------------------------- the task in the past


def history(api: Api) -> tuple[str, list[dict[str, Any]]]:
    """A task with a few writes; returns it and the answer of each write."""
    task = api.create_task()
    answers = [task]
    for item in (QUEUED, step("build", "clone", "in_progress"), step("build", "clone", "done")):
        answers.append(api.reported(task["id"], item))
    return task["id"], answers


def test_version_gives_the_task_as_it_was(api: Api) -> None:
    task_id, answers = history(api)

    for answer in answers:
        past = api.get_task(task_id, "reader", version=answer["version"])
        assert past["version"] == answer["version"] and past["status"] == answer["status"]
        assert [j["status"] for j in past["jobs"]] == [j["status"] for j in answer["jobs"]]
        assert [s["status"] for s in past["jobs"][0]["steps"]] == [
            s["status"] for s in answer["jobs"][0]["steps"]
        ]


def test_an_intermediate_version_is_readable(api: Api) -> None:
    task_id, answers = history(api)

    # Version 2 was stored by the first report, which stored more than one event.
    past = api.get_task(task_id, "reader", version=2)

    assert past["version"] == 2 and past["queued_at"] is not None
    assert isinstance(past["position"], int) and past["position"] < answers[1]["position"]


def test_a_version_that_does_not_exist_yet_is_404(api: Api) -> None:
    task_id, answers = history(api)

    response = api.call("GET", f"/v1/tasks/{task_id}", "reader",
                        params={"version": answers[-1]["version"] + 1})  # fmt: skip
    assert_problem(response, 404)
    for bad in ("0", "-1", "two"):
        body = assert_problem(api.call("GET", f"/v1/tasks/{task_id}?version={bad}", "reader"), 422)
        assert ("query", "version") in error_locs(body)


def test_as_of_gives_the_task_as_it_was_then(api: Api) -> None:
    task_id, answers = history(api)
    events = api.timeline(task_id)

    for event in events:
        past = api.get_task(task_id, "reader", as_of=event["recorded_at"])
        assert past["version"] == event["version"], event
    now = datetime.fromisoformat(events[-1]["recorded_at"]) + timedelta(hours=1)
    assert (
        api.get_task(task_id, "reader", as_of=now.isoformat())["version"] == answers[-1]["version"]
    )


def test_as_of_in_another_zone_means_the_same_moment(api: Api) -> None:
    task_id, _ = history(api)
    event = api.timeline(task_id)[1]
    moment = datetime.fromisoformat(event["recorded_at"])
    shifted = moment.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    plus_five = moment.astimezone(__import__("datetime").timezone(timedelta(hours=5))).isoformat()

    for as_of in (shifted, plus_five):
        assert api.get_task(task_id, "reader", as_of=as_of)["version"] == event["version"]


def test_as_of_before_the_task_existed_is_404(api: Api) -> None:
    task_id, _ = history(api)
    created = datetime.fromisoformat(api.timeline(task_id)[0]["recorded_at"])

    for moment in (created - timedelta(microseconds=1), datetime(2000, 1, 1).astimezone()):
        response = api.call(
            "GET", f"/v1/tasks/{task_id}", "reader", params={"as_of": moment.isoformat()}
        )
        assert "no such task" in assert_problem(response, 404)["detail"]


@pytest.mark.parametrize(
    "as_of",
    ["yesterday", "2026-11-28T10:00:00", "0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"],
    ids=["garbage", "naive", "before-year-1", "after-9999"],
)
def test_a_bad_as_of_is_refused_or_empty(api: Api, as_of: str) -> None:
    task_id, _ = history(api)

    response = api.call("GET", f"/v1/tasks/{task_id}", "reader", params={"as_of": as_of})

    if as_of.startswith("9999"):
        assert response.status_code == 200, response.text  # a moment after everything
    elif as_of.startswith("0001"):
        assert_problem(response, 404)
    else:
        assert ("query", "as_of") in error_locs(assert_problem(response, 422))


def test_the_past_hides_system_work_too(api: Api) -> None:
    task_id = fail_in_system_step(api)

    past = api.get_task(task_id, "reader", version=api.version(task_id))
    assert not shows_system_work(past) and past["failure"]["reason"] == "system"
    assert "job" not in past["failure"] or past["failure"]["job"] is None
    detailed = api.get_task(task_id, "auditor", version=api.version(task_id), include_system="true")
    assert detailed["failure"]["step"] == "scan"


# ---------------------------------------------------------------- timeline


def test_the_timeline_has_every_event_in_order(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.reported(task_id, QUEUED, step("build", "clone", "in_progress", at="2026-11-28T10:00:00Z"))
    api.call("POST", f"/v1/tasks/{task_id}/cancel", json={"reason": "stop"})

    events = api.timeline(task_id, include_system="true")

    assert [e["version"] for e in events] == list(range(1, api.version(task_id) + 1))
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {e["type"] for e in events} <= EVENT_TYPES
    assert [e["type"] for e in events][:2] == ["TaskCreated", "TaskQueued"]
    writer_key = next(k for k in api.call("GET", "/v1/api-keys", "admin").json()["items"]
                      if k["name"] == "acme-writer")  # fmt: skip
    for event in events:
        assert set(event) >= {
            "position",
            "version",
            "type",
            "recorded_at",
            "occurred_at",
            "actor",
            "data",
        }
        assert event["actor"] == {"id": writer_key["id"], "name": "acme-writer", "kind": "api_key"}
        assert event["recorded_at"].endswith("Z") and event["occurred_at"].endswith("Z")
    created = events[0]["data"]
    assert created["title"] == "Deploy shop to production" and created["org"] == "acme"
    started = next(e for e in events if e["type"] == "StepStarted")
    assert started["occurred_at"] == "2026-11-28T10:00:00Z"


def test_the_timeline_records_who_made_each_change(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.report(task_id, QUEUED, who="admin")
    api.call("POST", f"/v1/tasks/{task_id}/cancel", "platform")

    actors = [e["actor"]["name"] for e in api.timeline(task_id)]

    assert actors[0] == "acme-writer" and "acme-admin" in actors
    assert actors[-1] == "platform administrator"


def test_the_timeline_pages_by_version(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.finish(task_id)
    everything = api.timeline(task_id, include_system="true")

    pages: list[dict[str, Any]] = []
    after = 0
    while after is not None:
        params = {"after_version": after, "limit": 4, "include_system": "true"}
        response = api.call("GET", f"/v1/tasks/{task_id}/timeline", "auditor", params=params)
        page = response.json()
        assert len(page["events"]) <= 4
        pages.extend(page["events"])
        after = page["next_after_version"]
    assert pages == everything


def test_a_reader_timeline_still_pages_to_the_end(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.finish(task_id)
    visible = api.timeline(task_id, "reader")

    seen: list[dict[str, Any]] = []
    after = 0
    while after is not None:
        page = api.call("GET", f"/v1/tasks/{task_id}/timeline", "reader",
                        params={"after_version": after, "limit": 3}).json()  # fmt: skip
        seen.extend(page["events"])
        after = page["next_after_version"]
    assert seen == visible and not shows_system_work(seen)


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "after_version=-1", "limit=ten"])
def test_bad_timeline_paging_is_422(api: Api, query: str) -> None:
    task_id = api.create_task()["id"]

    body = assert_problem(api.call("GET", f"/v1/tasks/{task_id}/timeline?{query}", "reader"), 422)

    assert ("query", query.split("=")[0]) in error_locs(body)


# ---------------------------------------------------------------- graph


def test_the_graph_as_json(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.reported(task_id, step("build", "clone", "in_progress"))

    graph = api.call("GET", f"/v1/tasks/{task_id}/graph", "reader").json()

    assert graph["nodes"] == [
        {"key": "build", "name": "Build image", "status": "in_progress", "system": False},
        {"key": "deploy", "name": "Deploy", "status": "pending", "system": False},
    ]
    assert graph["edges"] == [{"from": "build", "to": "deploy"}]


def test_the_graph_as_svg_and_mermaid(api: Api) -> None:
    task_id = api.create_task()["id"]

    svg = api.call("GET", f"/v1/tasks/{task_id}/graph?format=svg", "reader")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(svg.text)
    assert root.tag.endswith("svg") and "Build image" in svg.text and "Deploy" in svg.text

    mermaid = api.call("GET", f"/v1/tasks/{task_id}/graph?format=mermaid", "reader")
    assert mermaid.status_code == 200 and mermaid.headers["content-type"].startswith("text/plain")
    assert mermaid.text.startswith("flowchart") and "-->" in mermaid.text
    assert "Build image" in mermaid.text


def test_an_unknown_graph_format_is_422(api: Api) -> None:
    task_id = api.create_task()["id"]

    body = assert_problem(api.call("GET", f"/v1/tasks/{task_id}/graph?format=png", "reader"), 422)

    assert ("query", "format") in error_locs(body)


def test_an_immediate_task_has_an_empty_graph(api: Api) -> None:
    task = api.created({"type": "user.add", "title": "Add", "kind": "immediate", "author": AUTHOR})

    graph = api.call("GET", f"/v1/tasks/{task['id']}/graph", "reader").json()

    assert graph == {"nodes": [], "edges": []}
    assert api.call("GET", f"/v1/tasks/{task['id']}/graph?format=svg", "reader").status_code == 200
