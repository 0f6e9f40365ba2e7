"""POST /v1/transitions: many tasks' transitions at once, atomic per item, answered per item."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from tests.api.conftest import QUEUED, Api, assert_problem, error_locs, step


def batch(api: Api, *items: dict[str, Any], who: str = "writer", **kwargs: Any) -> Any:
    return api.call("POST", "/v1/transitions", who, json={"items": list(items)}, **kwargs)


def item(task_id: str, *transitions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"task_id": task_id, "transitions": list(transitions), **fields}


def test_each_item_is_applied_and_answered_with_its_version_and_position(api: Api) -> None:
    first, second = api.create_task()["id"], api.create_task()["id"]

    response = batch(
        api,
        item(first, QUEUED, step("build", "clone", "in_progress")),
        item(second, QUEUED),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [(r["index"], r["task_id"], r["status"]) for r in results] == [
        (0, first, 200),
        (1, second, 200),
    ]
    for result in results:
        task = api.get_task(result["task_id"], "platform", include_system=True)
        assert result["version"] == task["version"] and result["position"] == task["position"]
    assert api.get_task(first)["jobs"][0]["steps"][0]["status"] == "in_progress"
    assert api.get_task(second)["status"] == "queued"
    assert body["position"] == max(r["position"] for r in results) == api.store_position()


def test_refused_items_get_the_single_endpoints_problem_and_spare_their_neighbours(
    api: Api,
) -> None:
    stored, refused, invalid = (api.create_task()["id"] for _ in range(3))
    foreign_task = api.create_task("intruder_writer")
    foreign = foreign_task["id"]
    unknown = str(uuid4())
    expected_conflict = api.report(refused, step("build", "compile", "done")).json()
    expected_invalid = api.report(invalid, QUEUED, step("build", "nope", "done")).json()

    response = batch(
        api,
        item(unknown, QUEUED),
        item(refused, step("build", "compile", "done")),
        item(stored, QUEUED),
        item(invalid, QUEUED, step("build", "nope", "done")),
        item(foreign, QUEUED),
    )

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [404, 409, 200, 422, 404]
    assert results[0]["problem"]["title"] == "Not found"
    assert results[1]["problem"] == expected_conflict
    assert results[1]["problem"]["index"] == 0
    assert results[3]["problem"] == expected_invalid
    assert results[3]["problem"]["index"] == 1
    assert results[4]["problem"] == results[0]["problem"]  # another org's task is not shown
    assert api.get_task(stored)["status"] == "queued"
    assert api.get_task(foreign, "intruder_admin")["version"] == foreign_task["version"]


def test_an_item_is_all_or_nothing(api: Api) -> None:
    task_id = api.create_task()["id"]
    version, before = api.version(task_id), api.store_position()

    response = batch(
        api,
        item(task_id, QUEUED, step("build", "clone", "in_progress"), step("deploy", "x", "done")),
    )

    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["status"] == 422 and result["problem"]["index"] == 2
    assert api.version(task_id) == version and api.store_position() == before
    assert response.json()["position"] is None


def test_items_of_one_task_apply_in_order(api: Api) -> None:
    task_id = api.create_task()["id"]

    response = batch(
        api,
        item(task_id, QUEUED),
        item(task_id, step("build", "clone", "in_progress")),
        item(task_id, step("build", "clone", "done")),
    )

    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 200, 200], results
    versions = [r["version"] for r in results]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert api.get_task(task_id)["jobs"][0]["steps"][0]["status"] == "done"


def test_a_stale_expected_version_is_a_409_for_that_item_only(api: Api) -> None:
    stale, fresh = api.create_task()["id"], api.create_task()["id"]
    api.reported(stale, QUEUED)

    response = batch(
        api,
        item(stale, step("build", "clone", "in_progress"), expected_version=1),
        item(fresh, QUEUED, expected_version=api.version(fresh)),
    )

    results = response.json()["results"]
    assert [r["status"] for r in results] == [409, 200], results
    assert "expected version 1" in results[0]["problem"]["detail"]


def test_a_retried_keyed_batch_gets_the_first_answer_and_stores_nothing(api: Api) -> None:
    task_id, unknown = api.create_task()["id"], str(uuid4())
    items = (item(task_id, QUEUED), item(unknown, QUEUED))
    key = {"Idempotency-Key": "batch-1"}
    first = batch(api, *items, headers=key)
    assert first.status_code == 200, first.text
    before = api.store_position()

    replay = batch(api, *items, headers=key)
    other_body = batch(api, item(task_id, QUEUED), headers=key)

    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["content-type"].startswith("application/json")
    assert replay.json() == first.json()
    assert [r["status"] for r in replay.json()["results"]] == [200, 404]
    assert api.store_position() == before
    assert_problem(other_body, 422)


def test_more_than_1000_transitions_in_all_is_a_422_naming_items(api: Api) -> None:
    task_id = api.create_task()["id"]
    many = [QUEUED] * 501

    response = batch(api, item(task_id, *many), item(task_id, *many))

    body = assert_problem(response, 422)
    assert ("body", "items") in error_locs(body)
    assert "1000" in body["errors"][0]["msg"]


def test_readers_may_not_report(api: Api) -> None:
    task_id = api.create_task()["id"]
    assert_problem(batch(api, item(task_id, QUEUED), who="reader"), 403)
