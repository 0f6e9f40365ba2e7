"""The OpenAPI document is true to the code: every route, the bearer scheme, the answers
each operation can give (and no other), the headers it reads and sends, examples."""

from __future__ import annotations

from typing import Any

import pytest

from api.schemas import Problem, TaskPublic
from tests.api.conftest import AUTHOR, PROBLEM, Api, assert_problem, deploy_task

ROUTES = {
    ("post", "/v1/tasks"),
    ("get", "/v1/tasks/{task_id}"),
    ("post", "/v1/tasks/{task_id}/transitions"),
    ("post", "/v1/tasks/{task_id}/cancel"),
    ("post", "/v1/tasks/{task_id}/rerun"),
    ("get", "/v1/tasks/{task_id}/timeline"),
    ("get", "/v1/tasks/{task_id}/graph"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{key_id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}
on_memory = pytest.mark.parametrize("store_url", ["memory://"], ids=["memory"])


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        return resolve(document, next(s for s in schema["anyOf"] if s.get("type") != "null"))
    return schema


@on_memory
def test_every_route_is_documented(document: dict[str, Any]) -> None:
    assert set(operations(document)) >= ROUTES


@on_memory
def test_v1_routes_need_the_bearer_scheme(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    (name,) = [n for n, s in schemes.items() if s == {**s, "type": "http", "scheme": "bearer"}]
    for (method, path), operation in operations(document).items():
        if path.startswith("/v1/"):
            assert {name: []} in operation.get("security", []), (method, path)
        else:
            assert not operation.get("security"), (method, path)


@on_memory
def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        if "requestBody" not in operation or (method, path) not in ROUTES:
            continue
        content = operation["requestBody"]["content"]
        assert list(content) == ["application/json"], (method, path)
        schema = resolve(document, content["application/json"]["schema"])
        assert schema.get("examples"), (method, path)


@on_memory
def test_the_documented_examples_are_accepted(api: Api, document: dict[str, Any]) -> None:
    ops = operations(document)

    def example(method: str, path: str) -> dict[str, Any]:
        content = ops[(method, path)]["requestBody"]["content"]["application/json"]
        return dict(resolve(document, content["schema"])["examples"][0])

    task = api.call("POST", "/v1/tasks", "platform", json=example("post", "/v1/tasks"))
    assert task.status_code == 201, task.text
    task_id = task.json()["id"]
    report = example("post", "/v1/tasks/{task_id}/transitions")
    response = api.call("POST", f"/v1/tasks/{task_id}/transitions", "platform", json=report)
    assert response.status_code == 200, response.text
    response = api.call("POST", f"/v1/tasks/{task_id}/cancel", "platform",
                        json=example("post", "/v1/tasks/{task_id}/cancel"))  # fmt: skip
    assert response.status_code == 200, response.text
    response = api.call("POST", f"/v1/tasks/{task_id}/rerun", "platform",
                        json=example("post", "/v1/tasks/{task_id}/rerun"))  # fmt: skip
    assert response.status_code == 201, response.text
    response = api.call("POST", "/v1/api-keys", "platform", json=example("post", "/v1/api-keys"))
    assert response.status_code == 201, response.text


@on_memory
def test_errors_are_documented_as_problem_documents(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        if (method, path) not in ROUTES or not path.startswith("/v1/"):
            continue
        for status in ("401", "403", "422"):
            content = operation["responses"][status]["content"]
            assert list(content) == ["application/problem+json"], (method, path, status)
            schema = resolve(document, content["application/problem+json"]["schema"])
            assert {"type", "title", "status"} <= set(schema["properties"])


@on_memory
def test_the_docs_page_is_served(api: Api) -> None:
    assert api.client.get("/docs").status_code == 200


# ---------------------------------------------------------------- declared answers are possible

SUCCESS = {"200", "201", "204"}
# Refusals an operation can give at all, by what it is: reads never answer the body guard's
# 400, 413 or 415, nor a 409 (their state never refuses anything).
POSSIBLE = {
    "get": SUCCESS | {"401", "403", "404", "422", "429", "503"},
    "post": SUCCESS | {"400", "401", "403", "404", "409", "413", "415", "422", "429", "503"},
    # DELETE takes no body, but the body guard reads (and refuses) one sent anyway.
    "delete": SUCCESS | {"400", "401", "403", "404", "409", "413", "415", "422", "429", "503"},
}
# No task or key in the path (or the query) to be missing: a 404 here would be a lie.
NEVER_404 = {("post", "/v1/tasks"), ("post", "/v1/api-keys"), ("post", "/v1/transitions"),
             ("get", "/v1/api-keys"), ("get", "/v1/tasks"), ("get", "/v1/events"),
             ("get", "/v1/export"), ("get", "/v1/signing-keys")}  # fmt: skip
BAD_KEYS = ["", "k" * 201]
CREATES = {"/v1/tasks", "/v1/tasks/{task_id}/rerun", "/v1/api-keys"}


def posts(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {path: op for (method, path), op in operations(document).items() if method == "post"}


@on_memory
def test_every_route_declares_only_answers_it_can_give(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        codes = set(operation["responses"])
        if path.startswith("/v1/"):
            assert codes <= POSSIBLE[method], (method, path, codes - POSSIBLE[method])
            assert {"401", "429", "503"} <= codes, (method, path)
        if (method, path) in NEVER_404:
            assert "404" not in codes, (method, path)
    assert set(operations(document)[("get", "/healthz")]["responses"]) == {"200"}
    assert set(operations(document)[("get", "/readyz")]["responses"]) == {"200", "503"}


@on_memory
def test_reads_declare_no_write_answers(document: dict[str, Any]) -> None:
    ops = operations(document)

    assert set(ops[("get", "/v1/api-keys")]["responses"]) == {
        "200", "401", "403", "422", "429", "503"
    }  # fmt: skip
    assert set(ops[("get", "/v1/signing-keys")]["responses"]) == {"200", "401", "429", "503"}
    for (method, path), operation in ops.items():
        if method == "get":
            assert not {"400", "409", "413", "415"} & set(operation["responses"]), path


@on_memory
def test_body_routes_declare_the_body_guards_refusals(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        if method in ("post", "delete"):
            assert {"400", "413", "415"} <= set(operation["responses"]), (method, path)


# ---------------------------------------------------------------- headers


def idempotency_key(operation: dict[str, Any]) -> dict[str, Any]:
    (parameter,) = [p for p in operation.get("parameters", []) if p["name"] == "Idempotency-Key"]
    return dict(parameter)


@on_memory
def test_every_post_declares_the_idempotency_key_header(document: dict[str, Any]) -> None:
    assert set(posts(document)) >= {path for method, path in ROUTES if method == "post"}
    for path, operation in posts(document).items():
        parameter = idempotency_key(operation)
        assert parameter["in"] == "header" and parameter["required"] is False, path
        assert parameter["schema"] == {"type": "string", "minLength": 1, "maxLength": 200}, path
        assert "retry" in parameter["description"], path
        assert "400" in operation["responses"], path


@on_memory
def test_no_other_operation_declares_it(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        if method != "post":
            names = [p["name"].lower() for p in operation.get("parameters", [])]
            assert "idempotency-key" not in names, (method, path)


def concrete(path: str, task_id: str) -> str:
    return path.format(task_id=task_id, job="build", step="clone")


def send(api: Api, path: str, operation: dict[str, Any], **headers: str) -> Any:
    content = operation.get("requestBody", {}).get("content", {})
    if any(media.startswith("text/") for media in content):
        body = {"content": b"line\n", "headers": {"Content-Type": "text/plain", **headers}}
    else:
        body = {"json": {}, "headers": headers}
    return api.call("POST", path, "platform", **body)


@on_memory
@pytest.mark.parametrize("key", BAD_KEYS, ids=["empty", "201-chars"])
def test_a_bad_key_is_the_documented_400_on_every_post(
    api: Api, document: dict[str, Any], key: str
) -> None:
    task_id = api.create_task()["id"]
    before = api.store_position()

    for path, operation in posts(document).items():
        answer = send(api, concrete(path, task_id), operation, **{"Idempotency-Key": key})
        problem = assert_problem(answer, 400)
        assert "Idempotency-Key" in problem["title"], (path, problem)

    assert api.store_position() == before


@on_memory
def test_retry_after_is_declared_wherever_it_is_sent(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        for status, response in operation["responses"].items():
            if status in ("429", "503") or (status == "409" and method == "post"):
                header = response.get("headers", {}).get("Retry-After")
                assert header and header["schema"]["type"] == "integer", (method, path, status)


def success(operation: dict[str, Any]) -> dict[str, Any]:
    (status,) = SUCCESS & set(operation["responses"])
    return dict(operation["responses"][status])


@on_memory
def test_creates_declare_location_and_every_post_idempotent_replayed(
    document: dict[str, Any],
) -> None:
    for path, operation in posts(document).items():
        headers = success(operation).get("headers", {})
        assert "Idempotent-Replayed" in headers, path
        assert ("Location" in headers) == (path in CREATES), path


@on_memory
def test_the_declared_headers_are_the_ones_sent(api: Api, document: dict[str, Any]) -> None:
    task_id = api.fail(api.create_task()["id"])["id"]
    bodies = {
        "/v1/tasks": {**deploy_task(), "org": "acme"},
        "/v1/tasks/{task_id}/rerun": {"author": AUTHOR},
        "/v1/api-keys": {"org": "acme", "role": "reader", "name": "ci"},
    }
    for path, body in bodies.items():
        declared = {name.lower() for name in success(posts(document)[path])["headers"]}
        url = concrete(path, task_id)
        first = api.call("POST", url, "platform", json=body, headers={"Idempotency-Key": path})
        replay = api.call("POST", url, "platform", json=body, headers={"Idempotency-Key": path})

        assert first.status_code == replay.status_code == 201, (path, first.text)
        assert declared - set(first.headers) == {"idempotent-replayed"}, path
        assert declared <= set(replay.headers), path
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert first.headers["Location"].endswith(first.json()["id"])


# ---------------------------------------------------------------- schemas and examples


@on_memory
def test_the_task_timeout_is_documented_as_the_3600_it_defaults_to(
    api: Api, document: dict[str, Any]
) -> None:
    field = document["components"]["schemas"]["TaskCreate"]["properties"]["timeout_seconds"]

    assert field["default"] == 3600
    assert "immediate" in field["description"]
    assert api.create_task()["timeout_seconds"] == 3600
    immediate = {**deploy_task(), "kind": "immediate", "jobs": []}
    assert api.created(immediate)["timeout_seconds"] is None


@on_memory
def test_every_member_of_a_sent_problem_is_declared(api: Api, document: dict[str, Any]) -> None:
    declared = set(document["components"]["schemas"]["Problem"]["properties"])
    task_id = api.create_task()["id"]
    refused = api.report(task_id, {"job": "deploy", "step": "rollout", "status": "in_progress"})
    stale = api.report(task_id, {"status": "queued"}, expected_version=7)
    unknown = api.report(task_id, {"job": "nope", "status": "in_progress"})
    invalid = api.call("POST", "/v1/tasks", json={**deploy_task(), "title": ""})

    for answer, status in ((refused, 409), (stale, 409), (unknown, 422), (invalid, 422)):
        problem = assert_problem(answer, status)
        assert set(problem) <= declared, set(problem) - declared
    assert {"index", "target", "current_status", "requested_status", "reason"} <= set(
        refused.json()
    )


MAIN_TASK_ROUTES = [
    ("post", "/v1/tasks"),
    ("get", "/v1/tasks/{task_id}"),
    ("post", "/v1/tasks/{task_id}/transitions"),
    ("post", "/v1/tasks/{task_id}/cancel"),
    ("post", "/v1/tasks/{task_id}/rerun"),
]


def media_examples(media: dict[str, Any]) -> list[dict[str, Any]]:
    if "example" in media:
        return [media["example"]]
    return [example["value"] for example in media.get("examples", {}).values()]


@on_memory
def test_task_routes_show_an_example_task_and_problem(document: dict[str, Any]) -> None:
    ops = operations(document)
    for route in MAIN_TASK_ROUTES:
        responses = ops[route]["responses"]
        (task,) = media_examples(success(ops[route])["content"]["application/json"])
        TaskPublic.model_validate(task)
        problems = [
            example
            for status, response in responses.items()
            if status[0] == "4"
            for example in media_examples(response["content"][PROBLEM])
        ]
        assert problems, route
        for example in problems:
            Problem.model_validate(example)
    transition_refused = media_examples(
        ops[("post", "/v1/tasks/{task_id}/transitions")]["responses"]["409"]["content"][PROBLEM]
    )
    assert any("reason" in example for example in transition_refused)


@on_memory
def test_the_problem_schema_carries_examples(document: dict[str, Any]) -> None:
    examples = document["components"]["schemas"]["Problem"]["examples"]

    assert examples
    for example in examples:
        Problem.model_validate(example)
