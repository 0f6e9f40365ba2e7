"""Authentication (401), roles (403), org scopes, and API keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.conftest import AUTHOR, Api, assert_problem, error_locs, step

UNKNOWN_TASK = "00000000-0000-4000-8000-000000000000"


def unauthorized(response: httpx.Response) -> None:
    assert_problem(response, 401)
    assert response.headers.get("www-authenticate", "").split(" ")[0] == "Bearer", response.headers


def issue(api: Api, who: str = "platform", **body: str) -> httpx.Response:
    return api.call(
        "POST", "/v1/api-keys", who, json={"org": "acme", "role": "reader", "name": "ci", **body}
    )


def as_token(api: Api, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return api.client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def immediate(**fields: Any) -> dict[str, Any]:
    return {"type": "user.add", "title": "Add", "kind": "immediate", "author": AUTHOR, **fields}


# ---------------------------------------------------------------- 401


def every_route(api: Api) -> list[tuple[str, str, dict[str, Any] | None]]:
    task_id = api.create_task()["id"]
    return [
        ("POST", "/v1/tasks", immediate()),
        ("POST", f"/v1/tasks/{task_id}/transitions", {"transitions": [{"status": "queued"}]}),
        ("POST", f"/v1/tasks/{task_id}/cancel", None),
        ("POST", f"/v1/tasks/{task_id}/rerun", {"author": AUTHOR}),
        ("GET", f"/v1/tasks/{task_id}", None),
        ("GET", f"/v1/tasks/{task_id}/timeline", None),
        ("GET", f"/v1/tasks/{task_id}/graph", None),
        ("GET", f"/v1/tasks/{UNKNOWN_TASK}", None),
        ("POST", "/v1/api-keys", {"org": "acme", "role": "admin", "name": "x"}),
        ("GET", "/v1/api-keys", None),
        ("DELETE", f"/v1/api-keys/{UNKNOWN_TASK}", None),
    ]


BAD_AUTHORIZATIONS = [
    None, "", "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Token abc", "tt_abc",
    "Bearer tt_unknown", "Bearer " + "x" * 5000, "Bearer a b", "Bearer tt_admin_test-tokeN",
]  # fmt: skip


def test_every_route_needs_a_known_bearer_token(api: Api) -> None:
    routes = every_route(api)
    before = api.store_position()

    for authorization in BAD_AUTHORIZATIONS:
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, path, body in routes:
            response = api.client.request(method, path, headers=headers, json=body)
            assert response.status_code == 401, (authorization, method, path)
            unauthorized(response)
    assert api.store_position() == before


def test_health_needs_no_token(api: Api) -> None:
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/readyz").status_code == 200


def test_a_revoked_token_fails_at_once(api: Api) -> None:
    created = issue(api, role="writer").json()
    token = created["token"]
    task_id = api.create_task()["id"]
    assert as_token(api, token, "GET", f"/v1/tasks/{task_id}").status_code == 200

    revoked = api.call("DELETE", f"/v1/api-keys/{created['id']}", "admin")
    assert revoked.status_code == 204 and revoked.content == b""

    unauthorized(as_token(api, token, "GET", f"/v1/tasks/{task_id}"))
    unauthorized(as_token(api, token, "POST", "/v1/tasks", json={"title": "x"}))
    unauthorized(as_token(api, token, "POST", f"/v1/tasks/{task_id}/cancel"))
    assert api.get_task(task_id)["status"] == "pending"


def test_a_revoked_token_fails_in_every_service_process(
    make_api: Callable[..., Api], store_url: str
) -> None:
    if store_url.startswith("memory"):
        pytest.skip("an in-memory store is not shared between processes")
    first, second = make_api(), make_api()
    created = issue(first, role="reader").json()
    task_id = first.create_task()["id"]
    assert as_token(second, created["token"], "GET", f"/v1/tasks/{task_id}").status_code == 200

    assert first.call("DELETE", f"/v1/api-keys/{created['id']}", "platform").status_code == 204

    unauthorized(as_token(second, created["token"], "GET", f"/v1/tasks/{task_id}"))
    unauthorized(as_token(first, created["token"], "GET", f"/v1/tasks/{task_id}"))


def test_an_admin_revoking_its_own_key_locks_itself_out(api: Api) -> None:
    keys = api.call("GET", "/v1/api-keys", "admin").json()["items"]
    admin_key = next(k for k in keys if k["name"] == "acme-admin")

    assert api.call("DELETE", f"/v1/api-keys/{admin_key['id']}", "admin").status_code == 204

    unauthorized(api.call("GET", "/v1/api-keys", "admin"))


# ---------------------------------------------------------------- roles


ORG_ROLES = ("reader", "writer", "auditor", "admin")
PLATFORM_ROLES = ("platform_reader", "platform_writer", "platform_auditor", "platform_admin")
# Every principal: each role scoped to acme, each scoped to `*`, the platform admin token.
EVERYONE = frozenset({*ORG_ROLES, *PLATFORM_ROLES, "platform"})
WRITERS = frozenset({"writer", "admin", "platform_writer", "platform_admin", "platform"})
AUDITORS = frozenset({"auditor", "admin", "platform_auditor", "platform_admin", "platform"})
KEY_ADMINS = frozenset({"admin", "platform_admin", "platform"})

ROLE_MATRIX = {
    # route group: who may call it, in either scope (acme or `*`)
    "create": WRITERS,
    "report": WRITERS,
    "cancel": WRITERS,
    "rerun": WRITERS,
    "append_log": WRITERS,
    "get": EVERYONE,
    "get_past": EVERYONE,
    "timeline": EVERYONE,
    "graph": EVERYONE,
    "graph_svg": EVERYONE,
    "read_log": EVERYONE,
    "list": EVERYONE,
    "feed": EVERYONE,
    "get_system": AUDITORS,
    "timeline_system": AUDITORS,
    "graph_system": AUDITORS,
    "read_system_log": AUDITORS,
    "list_system": AUDITORS,
    "feed_system": AUDITORS,
    "export": AUDITORS,
    "verify": AUDITORS,
    "issue_key": KEY_ADMINS,
    "list_keys": KEY_ADMINS,
    "revoke_key": KEY_ADMINS,
}
# Routes that read no single task: a `*` token names the org with `?org=` (an acme
# token may name its own).
ORG_QUERY = {
    "list": "/v1/tasks",
    "feed": "/v1/events",
    "list_system": "/v1/tasks?include_system=true",
    "feed_system": "/v1/events?include_system=true",
    "export": "/v1/export",
    "verify": "/v1/verify",
}


def with_org(url: str, org: str = "acme") -> str:
    return f"{url}{'&' if '?' in url else '?'}org={org}"


def call_route(api: Api, route: str, who: str) -> httpx.Response:
    """Calls `route` as `who` with a request that succeeds for a role allowed to make it.

    Every task is acme's; `*` tokens name acme wherever a route needs an org named.
    """
    task_id = api.create_task(org="acme")["id"]
    if route == "rerun":
        api.fail(task_id)
    if route in ("append_log", "read_log"):
        api.reported(task_id, step("build", "clone", "in_progress"))
    path = f"/v1/tasks/{task_id}"
    if route == "create":
        return api.call("POST", "/v1/tasks", who, json=immediate(org="acme"))
    if route == "report":
        return api.report(task_id, step("build", "clone", "in_progress"), who=who)
    if route == "cancel":
        return api.call("POST", f"{path}/cancel", who, json={"reason": "stop"})
    if route == "rerun":
        return api.call("POST", f"{path}/rerun", who, json={"author": AUTHOR})
    if route == "append_log":
        return api.call(
            "POST", f"{path}/jobs/build/steps/clone/logs", who,
            content=b"compiling\n", headers={"Content-Type": "text/plain; charset=utf-8"},
        )  # fmt: skip
    if route in ("issue_key", "list_keys", "revoke_key"):
        victim = issue(api).json()["id"]
        if route == "issue_key":
            return issue(api, who, role="writer")
        if route == "list_keys":
            return api.call("GET", "/v1/api-keys", who)
        return api.call("DELETE", f"/v1/api-keys/{victim}", who)
    if route in ORG_QUERY:
        return api.call("GET", with_org(ORG_QUERY[route]), who)
    url = {
        "get": path,
        "get_past": f"{path}?version=1",
        "timeline": f"{path}/timeline",
        "graph": f"{path}/graph",
        "graph_svg": f"{path}/graph?format=svg",
        "read_log": f"{path}/jobs/build/steps/clone/logs",
        "get_system": f"{path}?include_system=true",
        "timeline_system": f"{path}/timeline?include_system=true",
        "graph_system": f"{path}/graph?format=mermaid&include_system=true",
        "read_system_log": f"{path}/jobs/sync/steps/push/logs?include_system=true",
    }[route]
    return api.call("GET", url, who)


@pytest.mark.parametrize("who", sorted(EVERYONE))
def test_each_role_may_call_exactly_its_routes_in_either_scope(api: Api, who: str) -> None:
    wrong: list[tuple[Any, ...]] = []
    for route, allowed in ROLE_MATRIX.items():
        response = call_route(api, route, who)
        if who in allowed:
            ok = response.is_success
        else:
            ok = response.status_code == 403 and response.json()["status"] == 403
        if not ok:
            wrong.append((route, response.status_code, response.text[:200]))
    assert not wrong, wrong


@pytest.mark.parametrize("who", [*PLATFORM_ROLES, "platform"])
def test_a_platform_scoped_token_must_name_the_org_where_a_route_needs_one(
    api: Api, who: str
) -> None:
    """A `*` token without an org: 422 from a route its role allows, else 403 (the role
    is judged first, so a refused role learns nothing about the request)."""
    before = api.store_position()
    wrong: list[tuple[Any, ...]] = []

    calls = {
        "create": api.call("POST", "/v1/tasks", who, json=immediate()),
        **{route: api.call("GET", url, who) for route, url in ORG_QUERY.items()},
    }

    for route, response in calls.items():
        expected = 422 if who in ROLE_MATRIX[route] else 403
        body = response.json() if response.status_code >= 400 else {}
        if response.status_code != expected or body.get("status") != expected:
            wrong.append((route, response.status_code, response.text[:200]))
        elif expected == 422 and not any(loc[-1] == "org" for loc in error_locs(body)):
            wrong.append((route, "422 without naming org", body))
    assert not wrong, wrong
    assert api.store_position() == before


@pytest.mark.parametrize("who", PLATFORM_ROLES)
def test_a_platform_scoped_key_reaches_every_org_within_its_role(api: Api, who: str) -> None:
    theirs = api.create_task("intruder_writer")["id"]

    assert api.call("GET", f"/v1/tasks/{theirs}", who).json()["org"] == "evil"
    report = api.report(theirs, {"status": "queued"}, who=who)
    assert report.status_code == (200 if who in WRITERS else 403), report.text
    listed = api.call("GET", "/v1/tasks?org=evil", who)
    assert listed.status_code == 200, listed.text
    if who in WRITERS:
        created = api.created(immediate(org="evil"), who)
        assert created["org"] == "evil"
        assert_problem(api.call("GET", f"/v1/tasks/{created['id']}", "reader"), 404)


def test_a_refused_role_stores_nothing(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.fail(task_id)
    before = api.store_position()

    for who in ("reader", "auditor"):
        assert_problem(api.call("POST", "/v1/tasks", who, json=immediate()), 403)
        assert_problem(api.report(task_id, {"status": "queued"}, who=who), 403)
        assert_problem(api.call("POST", f"/v1/tasks/{task_id}/cancel", who), 403)
        assert_problem(
            api.call("POST", f"/v1/tasks/{task_id}/rerun", who, json={"author": AUTHOR}), 403
        )
        assert_problem(issue(api, who), 403)
    assert api.store_position() == before


# ---------------------------------------------------------------- org scopes


def test_an_org_token_creates_in_its_own_org(api: Api) -> None:
    assert api.created(immediate())["org"] == "acme"
    assert api.created(immediate(org="acme"))["org"] == "acme"


def test_an_org_token_naming_another_org_is_403(api: Api) -> None:
    before = api.store_position()

    for org in ("evil", "globex"):
        body = assert_problem(api.call("POST", "/v1/tasks", json=immediate(org=org)), 403)
        assert "acme" in body["detail"]
    assert api.store_position() == before


def test_a_platform_token_must_name_the_org(api: Api) -> None:
    before = api.store_position()

    for who in ("platform", "platform_writer", "platform_admin"):
        body = assert_problem(api.call("POST", "/v1/tasks", who, json=immediate()), 422)
        assert ("body", "org") in error_locs(body)
    assert api.store_position() == before

    for who, org in (("platform", "acme"), ("platform_writer", "globex")):
        task = api.created(immediate(org=org), who)
        assert task["org"] == org
        assert api.get_task(task["id"], who)["org"] == org
    body = assert_problem(api.call("POST", "/v1/tasks", "platform", json=immediate(org="*")), 422)
    assert ("body", "org") in error_locs(body)


def test_a_platform_token_reaches_every_org(api: Api) -> None:
    theirs = api.create_task("intruder_writer")["id"]

    assert api.get_task(theirs, "platform")["org"] == "evil"
    assert api.report(theirs, {"status": "queued"}, who="platform").status_code == 200


# ---------------------------------------------------------------- API keys


def test_issuing_a_key_shows_its_token_once(api: Api) -> None:
    response = issue(api, "admin", role="writer", name="ci")

    assert response.status_code == 201, response.text
    key = response.json()
    assert {"id", "org", "role", "name", "token", "created_at"} <= set(key)
    assert (key["org"], key["role"], key["name"]) == ("acme", "writer", "ci")
    assert key["token"] and isinstance(key["position"], int)
    assert response.headers["location"] == f"/v1/api-keys/{key['id']}"
    assert as_token(api, key["token"], "POST", "/v1/tasks", json=immediate()).status_code == 201

    listed = api.call("GET", "/v1/api-keys", "admin").json()["items"]
    mine = [k for k in listed if k["id"] == key["id"]]
    assert len(mine) == 1 and "token" not in mine[0]
    assert key["token"] not in api.call("GET", "/v1/api-keys", "platform").text


def test_keys_get_different_tokens(api: Api) -> None:
    tokens = {issue(api).json()["token"] for _ in range(3)}

    assert len(tokens) == 3


def test_an_org_admin_manages_only_its_own_org(api: Api) -> None:
    before = api.store_position()

    for org in ("evil", "*"):
        body = assert_problem(issue(api, "admin", org=org, role="admin"), 403)
        assert "acme" in body["detail"]
    assert api.store_position() == before

    assert_problem(api.call("GET", "/v1/api-keys?org=evil", "admin"), 403)
    assert {k["org"] for k in api.call("GET", "/v1/api-keys", "admin").json()["items"]} == {"acme"}
    assert {
        k["org"] for k in api.call("GET", "/v1/api-keys?org=acme", "admin").json()["items"]
    } == {"acme"}

    theirs = api.call("GET", "/v1/api-keys", "intruder_admin").json()["items"][0]["id"]
    assert_problem(api.call("DELETE", f"/v1/api-keys/{theirs}", "admin"), 404)
    assert api.call("GET", "/v1/api-keys", "intruder_writer").status_code == 403
    assert as_token(api, api.tokens["intruder_writer"], "GET", "/v1/api-keys").status_code == 403


def test_the_platform_admin_lists_one_org_or_all(api: Api) -> None:
    every = api.call("GET", "/v1/api-keys", "platform").json()["items"]
    evil = api.call("GET", "/v1/api-keys?org=evil", "platform").json()["items"]

    assert {k["org"] for k in every} == {"acme", "evil", "*"} and len(every) == 10
    assert {k["name"] for k in evil} == {"evil-writer", "evil-admin"}
    # A `*` admin key sees as much as the platform administrator.
    assert api.call("GET", "/v1/api-keys", "platform_admin").json()["items"] == every


def test_a_listed_key_shows_its_revocation(api: Api) -> None:
    key = issue(api).json()
    api.call("DELETE", f"/v1/api-keys/{key['id']}", "platform")

    listed = next(
        k for k in api.call("GET", "/v1/api-keys", "admin").json()["items"] if k["id"] == key["id"]
    )

    assert listed["revoked_at"] is not None


def test_revoking_an_unknown_or_revoked_key(api: Api) -> None:
    key = issue(api).json()
    assert api.call("DELETE", f"/v1/api-keys/{key['id']}", "admin").status_code == 204

    assert_problem(api.call("DELETE", f"/v1/api-keys/{key['id']}", "admin"), 409)
    assert_problem(api.call("DELETE", f"/v1/api-keys/{UNKNOWN_TASK}", "admin"), 404)
    task_id = api.create_task()["id"]
    assert_problem(api.call("DELETE", f"/v1/api-keys/{task_id}", "platform"), 404)
    assert_problem(api.call("DELETE", "/v1/api-keys/not-a-uuid", "platform"), 422)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"org": "acme", "role": "root", "name": "x"}, ("body", "role")),
        ({"org": "Acme Corp", "role": "reader", "name": "x"}, ("body", "org")),
        ({"org": "acme", "role": "reader", "name": ""}, ("body", "name")),
        ({"org": "acme", "role": "reader"}, ("body", "name")),
        ({"org": "acme", "role": "reader", "name": "x", "token": "tt_mine"}, ("body", "token")),
        ({"org": "acme", "role": "reader", "name": "x", "id": UNKNOWN_TASK}, ("body", "id")),
    ],
    ids=["role", "org", "empty-name", "no-name", "own-token", "own-id"],
)
def test_an_invalid_key_request_is_422(
    api: Api, body: dict[str, str], loc: tuple[str, ...]
) -> None:
    before = api.store_position()

    problem = assert_problem(api.call("POST", "/v1/api-keys", "platform", json=body), 422)

    assert loc in error_locs(problem)
    assert api.store_position() == before


def test_issuing_and_revoking_keys_are_events(api: Api) -> None:
    before = api.store_position()
    key = issue(api).json()
    assert key["position"] > before
    issued = api.store_position()

    api.call("DELETE", f"/v1/api-keys/{key['id']}", "platform")

    assert api.store_position() > issued
