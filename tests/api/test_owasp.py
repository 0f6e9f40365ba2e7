"""The OWASP API Security Top 10 items that apply to tasktrail, route by route.

- API1 broken object-level authorisation: every route, called by another org with ids
  of this org's task, job, step or key, answers exactly as for an id that does not
  exist (404), never 403 and never data. The routes are enumerated from the app, so a
  new route cannot be forgotten: it fails here until it is in a table below.
- API2 broken authentication: a missing, garbage or revoked token is 401 everywhere.
- API4 unrestricted resource consumption: bodies, page sizes, nesting and every string
  and collection of a request are bounded.
- API8 injection: filter values are data, never SQL or patterns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.conftest import AUTHOR, Api, assert_problem, deploy_task

UNKNOWN = "00000000-0000-4000-8000-000000000000"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None
    text: str | None = None

    def send(self, api: Api, headers: dict[str, str]) -> Any:
        if self.text is not None:
            headers = {**headers, "Content-Type": "text/plain; charset=utf-8"}
            return api.client.request(self.method, self.path, headers=headers, content=self.text)
        return api.client.request(self.method, self.path, headers=headers, json=self.body)


@dataclass(frozen=True)
class Victim:
    """What org acme owns: a running task (with a job and a step) and an API key."""

    task: str
    key: str


LOGS = "/v1/tasks/{task_id}/jobs/{job}/steps/{step}/logs"
# Routes that name an object (in their path, or as the object a query is about):
# (method, template) -> the call its own org
# could make successfully.
BY_ID: dict[tuple[str, str], Callable[[Victim], Call]] = {
    ("GET", "/v1/tasks/{task_id}"): lambda v: Call("GET", f"/v1/tasks/{v.task}"),
    ("GET", "/v1/tasks/{task_id}/timeline"): lambda v: Call("GET", f"/v1/tasks/{v.task}/timeline"),
    ("GET", "/v1/tasks/{task_id}/graph"): lambda v: Call("GET", f"/v1/tasks/{v.task}/graph"),
    ("GET", "/v1/tasks/{task_id}/origin-chain"): lambda v: Call(
        "GET", f"/v1/tasks/{v.task}/origin-chain"
    ),
    ("GET", "/v1/tasks/{task_id}/caused"): lambda v: Call("GET", f"/v1/tasks/{v.task}/caused"),
    ("POST", "/v1/tasks/{task_id}/transitions"): lambda v: Call(
        "POST", f"/v1/tasks/{v.task}/transitions", {"transitions": [{"status": "canceled"}]}
    ),
    ("POST", "/v1/tasks/{task_id}/cancel"): lambda v: Call(
        "POST", f"/v1/tasks/{v.task}/cancel", {"reason": "mine now"}
    ),
    ("POST", "/v1/tasks/{task_id}/rerun"): lambda v: Call(
        "POST", f"/v1/tasks/{v.task}/rerun", {"author": AUTHOR, "force": True}
    ),
    ("POST", LOGS): lambda v: Call(
        "POST", f"/v1/tasks/{v.task}/jobs/build/steps/clone/logs", text="injected\n"
    ),
    ("GET", LOGS): lambda v: Call("GET", f"/v1/tasks/{v.task}/jobs/build/steps/clone/logs"),
    ("GET", LOGS + "/stream"): lambda v: Call(
        "GET", f"/v1/tasks/{v.task}/jobs/build/steps/clone/logs/stream"
    ),
    ("DELETE", "/v1/api-keys/{key_id}"): lambda v: Call("DELETE", f"/v1/api-keys/{v.key}"),
    ("GET", "/v1/verify"): lambda v: Call("GET", f"/v1/verify?task_id={v.task}"),
}
# Routes a writer's role may not call at all (keys: admins; verify: auditors, admins).
NOT_FOR_WRITERS = {("DELETE", "/v1/api-keys/{key_id}"), ("GET", "/v1/verify")}
# Routes that name no object: another org's ids can only come in as filters or as
# `org`, and the answers must hold none of acme's data.
WITHOUT_ID: dict[tuple[str, str], Callable[[Victim], list[Call]]] = {
    ("GET", "/v1/tasks"): lambda v: [
        Call("GET", "/v1/tasks"),
        Call("GET", f"/v1/tasks?origin_task_id={v.task}"),
        Call("GET", f"/v1/tasks?rerun_of={v.task}"),
        Call("GET", "/v1/tasks?org=acme"),
    ],
    ("POST", "/v1/tasks"): lambda v: [
        Call("POST", "/v1/tasks", {**deploy_task(), "org": "acme"}),
        Call("POST", "/v1/tasks", {**deploy_task(), "origin_task_id": v.task}),
    ],
    ("GET", "/v1/events"): lambda v: [
        Call("GET", "/v1/events"),
        Call("GET", f"/v1/events?task_id={v.task}"),
        Call("GET", "/v1/events?org=acme"),
    ],
    ("GET", "/v1/events/stream"): lambda v: [Call("GET", "/v1/events/stream?org=acme")],
    ("GET", "/v1/export"): lambda v: [
        Call("GET", "/v1/export"),
        Call("GET", "/v1/export?org=acme"),
    ],
    ("GET", "/v1/api-keys"): lambda v: [
        Call("GET", "/v1/api-keys"),
        Call("GET", "/v1/api-keys?org=acme"),
    ],
    ("POST", "/v1/api-keys"): lambda v: [
        Call("POST", "/v1/api-keys", {"org": "acme", "role": "admin", "name": "mine"})
    ],
    ("GET", "/v1/signing-keys"): lambda v: [Call("GET", "/v1/signing-keys")],
    ("POST", "/v1/transitions"): lambda v: [Call("POST", "/v1/transitions", batch_of(v.task))],
    ("GET", "/v1/checkpoints/latest"): lambda v: [
        Call("GET", "/v1/checkpoints/latest"),
        Call("GET", "/v1/checkpoints/latest?org=acme"),
    ],
}


def batch_of(task_id: str) -> dict[str, Any]:
    return {"items": [{"task_id": task_id, "transitions": [{"status": "canceled"}]}]}


def v1_routes(api: Api) -> set[tuple[str, str]]:
    """Every `/v1` route of the app, as its OpenAPI document lists them (FastAPI builds
    the document from every route included, and no `/v1` route is left out of it)."""
    paths = api.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return {
        (method.upper(), path)
        for path, item in paths.items()
        if path.startswith("/v1/")
        for method in item
    }


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api(run_projections=True)


@pytest.fixture
def victim(api: Api) -> Victim:
    task = api.create_task()
    api.reported(task["id"], {"job": "build", "step": "clone", "status": "in_progress"})
    appended = api.call(
        "POST",
        f"/v1/tasks/{task['id']}/jobs/build/steps/clone/logs",
        content="secret build output\n",
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    assert appended.status_code == 201, appended.text
    key = api.call(
        "POST", "/v1/api-keys", "admin", json={"org": "acme", "role": "reader", "name": "k"}
    )
    assert key.status_code == 201, key.text
    return Victim(task=task["id"], key=key.json()["id"])


def all_calls(victim: Victim) -> list[Call]:
    calls = [make(victim) for make in BY_ID.values()]
    return calls + [call for make in WITHOUT_ID.values() for call in make(victim)]


# ---------------------------------------------------------------- API1: object level


def test_every_route_is_in_a_table(api: Api) -> None:
    missing = v1_routes(api) - set(BY_ID) - set(WITHOUT_ID)
    stale = (set(BY_ID) | set(WITHOUT_ID)) - v1_routes(api)

    assert not missing, f"add these routes to BY_ID or WITHOUT_ID: {sorted(missing)}"
    assert not stale, stale


def comparable(response: httpx.Response) -> tuple[int, str, Any]:
    return response.status_code, response.headers["content-type"], response.json()


@pytest.mark.parametrize("intruder", ["intruder_writer", "intruder_admin"])
def test_another_orgs_ids_are_404_on_every_route(api: Api, victim: Victim, intruder: str) -> None:
    before = api.store_position()
    for route, make in BY_ID.items():
        call = make(victim)
        absent = Call(
            call.method,
            call.path.replace(victim.task, UNKNOWN).replace(victim.key, UNKNOWN),
            call.body,
            call.text,
        )

        answer = call.send(api, api.headers(intruder))

        # A role refusal (403) comes before any lookup, and is the same for an absent id.
        refused_role = intruder == "intruder_writer" and route in NOT_FOR_WRITERS
        assert_problem(answer, 403 if refused_role else 404)
        assert comparable(answer) == comparable(absent.send(api, api.headers(intruder))), call

    assert api.store_position() == before
    assert api.get_task(victim.task)["status"] == "in_progress"
    keys = api.call("GET", "/v1/api-keys", "admin").json()["items"]
    assert [k["revoked_at"] for k in keys if k["id"] == victim.key] == [None]


def test_a_batch_naming_another_orgs_task_is_404_for_that_item(api: Api, victim: Victim) -> None:
    before = api.store_position()
    answer = api.call("POST", "/v1/transitions", "intruder_writer", json=batch_of(victim.task))
    absent = api.call("POST", "/v1/transitions", "intruder_writer", json=batch_of(UNKNOWN))

    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert result["status"] == 404
    [unknown] = absent.json()["results"]
    assert {**result, "task_id": UNKNOWN} == unknown
    assert api.store_position() == before


def test_routes_without_ids_show_nothing_of_another_org(api: Api, victim: Victim) -> None:
    secrets = (victim.task, victim.key, "secret build output", '"acme"')
    for make in WITHOUT_ID.values():
        for call in make(victim):
            answer = call.send(api, api.headers("intruder_admin"))
            sent = call.path + json.dumps(call.body)

            assert answer.status_code in (200, 201, 403, 404, 422), (call, answer.text)
            for secret in secrets:
                if secret not in sent:  # an answer may echo what the caller sent
                    assert secret not in answer.text, (call, secret, answer.text[:500])


# ---------------------------------------------------------------- API2: authentication


def test_missing_garbage_and_revoked_tokens_are_401_everywhere(api: Api, victim: Victim) -> None:
    revoked = api.call(
        "POST", "/v1/api-keys", "admin", json={"org": "acme", "role": "admin", "name": "r"}
    )
    assert api.call("DELETE", f"/v1/api-keys/{revoked.json()['id']}", "admin").status_code == 204
    before = api.store_position()
    authorizations = [
        {},
        {"Authorization": "Bearer tt_" + "0" * 43},
        {"Authorization": f"Bearer {revoked.json()['token']}"},
    ]

    for call in all_calls(victim):
        for headers in authorizations:
            answer = call.send(api, headers)

            assert_problem(answer, 401)
            assert answer.headers["www-authenticate"] == "Bearer", call

    assert api.store_position() == before


@pytest.mark.parametrize("store_url", ["memory://"], ids=["memory"])
def test_tokens_never_reach_the_logs(
    api: Api, victim: Victim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    guessed = "tt_guessed" + "x" * 30
    used = [api.tokens["admin"], api.tokens["platform"], guessed]

    for token in used:
        for call in all_calls(victim):
            if not call.path.split("?")[0].endswith("/stream"):  # would follow a live log
                call.send(api, {"Authorization": f"Bearer {token}"})
        # A client that wrongly puts its token in the URL: the log has the route, not the URL.
        api.client.get(f"/v1/tasks/{victim.task}?token={token}", headers=api.headers("admin"))

    client_side = ("httpx", "httpx2", "httpcore")  # the test's own client logs its URLs
    logged = "\n".join(
        f"{r.getMessage()} {r.__dict__}"
        for r in caplog.records
        if r.name.split(".")[0] not in client_side
    )
    assert "GET /v1/tasks/{task_id}" in logged
    for token in used:
        assert token not in logged


# ---------------------------------------------------------------- API4: resource consumption


def openapi(api: Api) -> dict[str, Any]:
    return dict(api.client.get("/openapi.json").json())


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def unbounded(document: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    """Every string without a length bound and every array or map without a size bound."""
    schema = resolve(document, schema)
    found: list[str] = []
    for option in schema.get("anyOf", []) + schema.get("allOf", []) + schema.get("oneOf", []):
        found += unbounded(document, option, where)
    kind = schema.get("type")
    if kind == "string" and not (
        {"maxLength", "pattern", "enum", "const"} & set(schema)
        or schema.get("format") in ("uuid", "date-time")
    ):
        found.append(where)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(where)
        found += unbounded(document, schema.get("items", {}), f"{where}[]")
    if kind == "object":
        for name, child in schema.get("properties", {}).items():
            found += unbounded(document, child, f"{where}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                found.append(f"{where}{{}}")
            found += unbounded(document, extra, f"{where}{{}}")
            found += unbounded(document, schema.get("propertyNames", {}), f"{where}{{key}}")
    return found


@pytest.mark.parametrize("store_url", ["memory://"], ids=["memory"])
def test_every_string_and_collection_of_a_request_is_bounded(api: Api) -> None:
    document = openapi(api)
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                name = f"{where} {parameter['in']}:{parameter['name']}"
                found += unbounded(document, parameter.get("schema", {}), name)
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                if not media.startswith(
                    "text/plain"
                ):  # a log chunk: bounded by the body limit (413)
                    found += unbounded(document, content.get("schema", {}), f"{where} body")

    assert not found, sorted(found)


def body_routes(api: Api, victim: Victim) -> list[Call]:
    return [c for c in all_calls(victim) if c.method in ("POST", "PUT", "PATCH", "DELETE")]


@pytest.mark.parametrize("store_url", ["memory://"], ids=["memory"])
def test_an_oversized_body_is_413_on_every_body_route(api: Api, victim: Victim) -> None:
    before = api.store_position()
    for call in body_routes(api, victim):
        media = "text/plain; charset=utf-8" if call.text is not None else "application/json"
        answer = api.client.request(
            call.method,
            call.path,
            headers=api.headers("admin", **{"Content-Type": media}),
            content=b'"' + b"x" * (MIB + 1) + b'"',
        )
        assert_problem(answer, 413)
    assert api.store_position() == before


@pytest.mark.parametrize("store_url", ["memory://"], ids=["memory"])
def test_deep_json_is_400_on_every_json_route(api: Api, victim: Victim) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    for call in body_routes(api, victim):
        if call.text is not None:
            continue
        answer = api.client.request(
            call.method,
            call.path,
            headers=api.headers("admin", **{"Content-Type": "application/json"}),
            content=deep,
        )
        body = assert_problem(answer, 400)
        assert "nest" in body["detail"], body


def paged(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, parameter)
        for path, item in document["paths"].items()
        for parameter in item.get("get", {}).get("parameters", [])
        if parameter["name"] == "limit"
    ]


def test_page_sizes_over_the_maximum_are_422(api: Api, victim: Victim) -> None:
    document = openapi(api)
    pages = paged(document)
    assert {path for path, _ in pages} >= {"/v1/tasks", "/v1/events", LOGS}

    for path, parameter in pages:
        maximum = resolve(document, parameter["schema"])["maximum"]
        assert maximum <= 1000, path
        concrete = path.format(task_id=victim.task, job="build", step="clone")

        answer = api.call("GET", f"{concrete}?limit={maximum + 1}", "admin")

        assert ["query", "limit"] in [e["loc"] for e in assert_problem(answer, 422)["errors"]]
        assert api.call("GET", f"{concrete}?limit={maximum}", "admin").status_code == 200


@pytest.mark.parametrize("store_url", ["memory://"], ids=["memory"])
@pytest.mark.parametrize(
    ("path", "param", "limit"),
    [
        ("/v1/tasks", "project", 200),
        ("/v1/tasks", "type", 200),
        ("/v1/tasks", "author_id", 200),
        ("/v1/events", "type", 200),
    ],
)
def test_over_long_query_strings_are_422(api: Api, path: str, param: str, limit: int) -> None:
    assert api.call("GET", path, "reader", params={param: "a" * limit}).status_code != 422

    answer = api.call("GET", path, "reader", params={param: "a" * (limit + 1)})

    assert ["query", param] in [e["loc"] for e in assert_problem(answer, 422)["errors"]]


@pytest.mark.parametrize("store_url", ["memory://"], ids=["memory"])
def test_too_many_labels_or_label_filters_are_422(api: Api) -> None:
    labels = {f"k{n}": "v" for n in range(33)}
    answer = api.call("POST", "/v1/tasks", json={**deploy_task(), "labels": labels})
    assert ("body", "labels") in [tuple(e["loc"]) for e in assert_problem(answer, 422)["errors"]]

    filters = [("label", f"k{n}:v") for n in range(33)]
    answer = api.call("GET", "/v1/tasks", "reader", params=filters)
    assert ["query", "label"] in [e["loc"] for e in assert_problem(answer, 422)["errors"]]


@pytest.mark.parametrize("store_url", ["memory://"], ids=["memory"])
def test_an_over_long_idempotency_key_is_400(api: Api) -> None:
    before = api.store_position()
    answer = api.call(
        "POST", "/v1/tasks", json=deploy_task(), headers={"Idempotency-Key": "k" * 201}
    )

    assert_problem(answer, 400)
    assert api.store_position() == before
    assert (
        api.call(
            "POST", "/v1/tasks", json=deploy_task(), headers={"Idempotency-Key": "k" * 200}
        ).status_code
        == 201
    )


# ---------------------------------------------------------------- API8: injection

HOSTILE = [
    "%",
    "_",
    "%%",
    "sh_p",
    "sho%",
    "'",
    '"',
    "' OR '1'='1",
    "shop' --",
    "shop'; DROP TABLE task_list; --",
    "\\",
    "shop\\",
    "[a-z]*",
    "*",
    ".*",
]
ODD_PROJECT = "50%_off 'now' \"x\" \\ [a]"


@pytest.fixture
def filtered(api: Api) -> tuple[Api, dict[str, str], int]:
    """Three tasks: a plain one, one with an odd project and labels, and one of evil."""
    plain = api.create_task()
    odd = api.create_task(
        project=ODD_PROJECT, labels={"app": ODD_PROJECT, "env": "100%"}, type="a_b.c:d-e"
    )
    api.create_task("intruder_writer")
    position = max(plain["position"], odd["position"])
    return api, {"plain": plain["id"], "odd": odd["id"]}, position


def found(api: Api, position: int, path: str, **params: Any) -> list[str]:
    answer = api.call("GET", path, "reader", params={**params, "min_position": position})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return [item.get("id") or item.get("task_id") for item in body.get("items", body.get("events"))]


def test_hostile_filter_values_match_nothing(filtered: tuple[Api, dict[str, str], int]) -> None:
    api, _, position = filtered
    for value in HOSTILE:
        assert found(api, position, "/v1/tasks", project=value) == [], value
        assert found(api, position, "/v1/tasks", type=value) == [], value
        assert found(api, position, "/v1/tasks", author_id=value) == [], value
        assert found(api, position, "/v1/tasks", label=f"app:{value}") == [], value
        assert found(api, position, "/v1/tasks", label=f"{value}:shop") == [], value
        assert found(api, position, "/v1/events", type=value) == [], value


def test_odd_values_match_exactly_themselves(filtered: tuple[Api, dict[str, str], int]) -> None:
    api, tasks, position = filtered

    assert found(api, position, "/v1/tasks", project=ODD_PROJECT) == [tasks["odd"]]
    assert found(api, position, "/v1/tasks", label=f"app:{ODD_PROJECT}") == [tasks["odd"]]
    assert found(api, position, "/v1/tasks", label="env:100%") == [tasks["odd"]]
    assert found(api, position, "/v1/tasks", type="a_b.c:d-e") == [tasks["odd"]]
    assert found(api, position, "/v1/tasks", project="shop") == [tasks["plain"]]
    assert set(found(api, position, "/v1/tasks")) == set(tasks.values())


@pytest.mark.parametrize("param", ["project", "type", "author_id", "label"])
def test_a_nul_in_a_filter_is_refused_or_matches_nothing(
    filtered: tuple[Api, dict[str, str], int], param: str
) -> None:
    api, _, position = filtered
    value = "app:sh\x00op" if param == "label" else "sh\x00op"

    answer = api.call("GET", "/v1/tasks", "reader", params={param: value, "min_position": position})

    if answer.status_code == 200:
        assert answer.json()["items"] == []
    else:
        assert ["query", param] in [e["loc"] for e in assert_problem(answer, 422)["errors"]]


def test_the_tables_survive(filtered: tuple[Api, dict[str, str], int]) -> None:
    api, tasks, position = filtered
    found(api, position, "/v1/tasks", project="shop'; DROP TABLE task_list; --")

    assert set(found(api, position, "/v1/tasks")) == set(tasks.values())
    assert json.loads(api.call("GET", f"/v1/tasks/{tasks['odd']}", "reader").text)["project"] == (
        ODD_PROJECT
    )
