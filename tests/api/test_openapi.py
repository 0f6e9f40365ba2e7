"""The OpenAPI document is true to the code: every route, the bearer scheme, examples."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api

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
