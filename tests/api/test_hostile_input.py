"""Hostile bodies, headers and paths: refused with a problem document, never a 5xx,
and nothing stored."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import (
    ADMIN_TOKEN,
    AUTHOR,
    Api,
    LiveServer,
    assert_problem,
    deploy_task,
    error_locs,
)

MIB = 1024 * 1024
TASK = json.dumps(deploy_task())
DIGITS_5000 = "1" * 5000  # past the 4300 digits Python turns into an int by default
# The payload tests below are refused before any store is touched, so they run on the
# in-memory store; test_every_hostile_body_is_refused_on_every_store sweeps them all
# over memory, SQLite and PostgreSQL.
on_memory = pytest.mark.parametrize("store_url", ["memory://"], ids=["memory"])


def with_field(name: str, value: Any, **nested: Any) -> bytes:
    return json.dumps({**deploy_task(), name: value, **nested}).encode()


def project_as(raw: bytes) -> bytes:
    """The valid task with `raw` (JSON text, escapes kept as sent) as its project."""
    body = TASK.encode()
    assert b'"project": "shop"' in body
    return body.replace(b'"project": "shop"', b'"project": ' + raw)


def raw_json(text: str) -> bytes:
    """A body spliced into the valid task, as raw JSON text."""
    return ("{" + text + ", " + TASK[1:]).encode()


@pytest.fixture
def known(api: Api) -> Iterator[tuple[Api, str]]:
    """A known task; after the test its version and the store position are unchanged."""
    task_id = api.create_task()["id"]
    before = api.store_position()
    yield api, task_id
    assert api.version(task_id) == 1
    assert api.store_position() == before


def post(
    api: Api, body: bytes | Iterator[bytes], path: str = "/v1/tasks", **headers: str
) -> httpx.Response:
    headers = {"Content-Type": "application/json", **headers}
    return api.call("POST", path, content=body, headers=headers)


# ---------------------------------------------------------------- malformed JSON → 400


MALFORMED = pytest.mark.parametrize(
    "body",
    [
        raw_json('"timeout_seconds": NaN'),
        raw_json('"timeout_seconds": Infinity'),
        raw_json('"timeout_seconds": -Infinity'),
        raw_json('"title": "a"'),  # duplicate key: the task already has a title
        b'{"type": "a", "title": "t", "kind": "immediate",'
        b' "author": {"id": "u", "id": "v", "name": "n", "kind": "user"}}',
        b"[" * 10_000 + b"]" * 10_000,
        b'{"labels":' * 10_000 + b"{}" + b"}" * 10_000,
        ('{"labels": {"a": ' + "[" * 40 + "]" * 40 + "}}").encode(),
        b'{"title": "\xff\xfe broken"}',
        b'{"title": "\xed\xa0\x80"}',  # a surrogate encoded in UTF-8: not UTF-8
        b'{"title": "open',
        b'{"title": "a",}',
        b"{'title': 'a'}",
        b'{"title": "a"} trailing',
        b"\xef\xbb\xbf" + TASK.encode(),
        b"{\"title\": \"a\"}\x00",
        raw_json(f'"timeout_seconds": {DIGITS_5000}'),
        raw_json(f'"timeout_seconds": -{DIGITS_5000}'),
        raw_json(f'"x": {{"a": [{DIGITS_5000}]}}'),
    ],
    ids=["nan", "infinity", "-infinity", "duplicate-key", "duplicate-nested-key",
         "deep-arrays", "deep-objects", "40-levels", "invalid-utf8", "utf8-surrogate",
         "truncated", "trailing-comma", "single-quotes", "trailing-garbage", "bom",
         "trailing-nul", "5000-digit-int", "5000-digit-negative-int", "5000-digit-int-nested"],
)  # fmt: skip


@on_memory
@MALFORMED
def test_malformed_json_is_400(known: tuple[Api, str], body: bytes) -> None:
    api, task_id = known

    assert_problem(post(api, body), 400)
    assert_problem(post(api, body, f"/v1/tasks/{task_id}/transitions"), 400)
    assert_problem(post(api, body, "/v1/api-keys", Authorization=f"Bearer {ADMIN_TOKEN}"), 400)


@on_memory
def test_an_over_long_integer_is_400_saying_so(known: tuple[Api, str]) -> None:
    api, task_id = known
    body = raw_json(f'"timeout_seconds": {DIGITS_5000}')

    for path in ("/v1/tasks", f"/v1/tasks/{task_id}/transitions", "/v1/transitions"):
        problem = assert_problem(post(api, body, path), 400)
        assert "5000 digits" in problem["detail"], problem
    # The longest integer taken is still read, and refused by the field's own bounds.
    problem = assert_problem(post(api, raw_json(f'"timeout_seconds": {"1" * 4300}')), 422)
    assert ("body", "timeout_seconds") in error_locs(problem)


@on_memory
@pytest.mark.parametrize(
    "number",
    [f"1.{DIGITS_5000}", f"{DIGITS_5000}.0", f"1{'0' * 5000}e-4990", "1e400", "-1e400",
     "1E99999999999999999999"],
    ids=["5000-digit-fraction", "5000-digit-float", "5000-digit-mantissa", "1e400", "-1e400",
         "huge-exponent"],
)  # fmt: skip
def test_huge_or_overflowing_floats_are_422_naming_the_field(
    known: tuple[Api, str], number: str
) -> None:
    api, _ = known

    problem = assert_problem(post(api, raw_json(f'"timeout_seconds": {number}')), 422)

    assert ("body", "timeout_seconds") in error_locs(problem), problem


# ---------------------------------------------------------------- text that is not text → 422


NOT_TEXT = pytest.mark.parametrize(
    ("body", "loc"),
    [
        (project_as(b'"sh\\u0000op"'), ("body", "project")),
        (with_field("labels", {"app\u0000": "x"}), ("body", "labels", "app\u0000")),
        (project_as(b'"\\ud800"'), ("body", "project")),
        (project_as(b'"\\udfff tail"'), ("body", "project")),
        (raw_json('"labels": {"\\ud800": "x"}').replace(b'"labels": {"app"', b'"x": {"app"'),
         ("body", "labels", "\ud800")),
        (with_field("jobs", [{**deploy_task()["jobs"][0], "name": "a\u0000b"}]),
         ("body", "jobs", 0, "name")),
    ],
    ids=["nul-in-string", "nul-in-key", "lone-high-surrogate", "lone-low-surrogate",
         "surrogate-in-key", "nested-nul"],
)  # fmt: skip


@on_memory
@NOT_TEXT
def test_nul_and_lone_surrogates_are_422_naming_the_field(
    known: tuple[Api, str], body: bytes, loc: tuple[Any, ...]
) -> None:
    api, _ = known

    problem = assert_problem(post(api, body), 422)

    assert loc in error_locs(problem), problem


def test_a_paired_surrogate_escape_is_fine(api: Api) -> None:
    response = post(api, project_as(b'"\\ud83d\\ude80 launch"'))

    assert response.status_code == 201, response.text
    assert response.json()["project"] == "\U0001f680 launch"


@pytest.mark.parametrize(
    "labels",
    [
        {"_type_": "uuid_hex", "_data_": "0" * 32},
        {"_type_": "datetime_iso", "_data_": "2026-01-01T00:00:00"},
        {"_type_": "job", "_data_": "x"},
        {"_data_": "x", "__type__": "y"},
    ],
    ids=["uuid-tag", "datetime-tag", "own-tag", "lookalikes"],
)
def test_labels_shaped_like_the_stores_type_tags_come_back_unchanged(
    api: Api, labels: dict[str, str]
) -> None:
    task_id = api.create_task(labels=labels)["id"]
    api.reported(task_id, {"status": "queued"})

    assert api.get_task(task_id, "reader")["labels"] == labels
    assert api.get_task(task_id, "reader", version=1)["labels"] == labels
    assert api.timeline(task_id, "reader")[0]["data"]["labels"] == labels


# ---------------------------------------------------------------- unknown and server-owned fields


SERVER_OWNED = ["id", "version", "position", "recorded_at", "occurred_at", "actor", "hash",
                "prev_hash", "status", "created_at", "finished_at", "rerun_of", "reruns", "forced",
                "failure", "cancel_requested", "colour"]  # fmt: skip


@on_memory
@pytest.mark.parametrize("field", SERVER_OWNED)
def test_unknown_and_server_owned_fields_are_422(known: tuple[Api, str], field: str) -> None:
    api, task_id = known

    problem = assert_problem(post(api, with_field(field, None)), 422)
    assert ("body", field) in error_locs(problem)

    transition = {"transitions": [{"status": "queued", field: None}]}
    problem = assert_problem(
        api.call("POST", f"/v1/tasks/{task_id}/transitions", json=transition), 422
    )
    assert ("body", "transitions", 0, field) in error_locs(problem)

    for path, body in (
        (f"/v1/tasks/{task_id}/cancel", {}),
        (f"/v1/tasks/{task_id}/rerun", {"author": AUTHOR}),
    ):
        problem = assert_problem(api.call("POST", path, json={**body, field: None}), 422)
        assert ("body", field) in error_locs(problem)


@on_memory
@pytest.mark.parametrize(
    ("where", "loc"),
    [
        ({"author": {**AUTHOR, "email": "a@b"}}, ("body", "author", "email")),
        ({"jobs": [{**deploy_task()["jobs"][0], "status": "done"}]}, ("body", "jobs", 0, "status")),
        ({"jobs": [{**deploy_task()["jobs"][0],
                    "steps": [{"key": "s", "name": "S", "error": None}]}]},
         ("body", "jobs", 0, "steps", 0, "error")),
    ],
    ids=["author", "job", "step"],
)  # fmt: skip
def test_nested_unknown_fields_are_422(known: tuple[Api, str], where: dict, loc: tuple) -> None:
    api, _ = known

    problem = assert_problem(api.call("POST", "/v1/tasks", json={**deploy_task(), **where}), 422)

    assert loc in error_locs(problem)


# ---------------------------------------------------------------- lengths and counts


def long_job(**fields: Any) -> list[dict[str, Any]]:
    return [{"key": "j", "name": "J", "steps": [{"key": "s", "name": "S"}], **fields}]


TOO_LONG = pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"title": "t" * 501}, ("body", "title")),
        ({"type": "a" * 101}, ("body", "type")),
        ({"project": "p" * 201}, ("body", "project")),
        ({"author": {**AUTHOR, "name": "n" * 201}}, ("body", "author", "name")),
        ({"author": {**AUTHOR, "id": "i" * 201}}, ("body", "author", "id")),
        ({"labels": {"k" * 101: "v"}}, ("body", "labels", "k" * 101, "[key]")),
        ({"labels": {"k": "v" * 501}}, ("body", "labels", "k")),
        ({"labels": {f"k{i}": "v" for i in range(33)}}, ("body", "labels")),
        ({"jobs": long_job(name="n" * 201)}, ("body", "jobs", 0, "name")),
        ({"jobs": long_job(key="k" * 101)}, ("body", "jobs", 0, "key")),
        ({"jobs": [{"key": f"j{i}", "name": "J", "steps": [{"key": "s", "name": "S"}]}
                   for i in range(201)]}, ("body", "jobs")),
        ({"jobs": long_job(steps=[{"key": f"s{i}", "name": "S"} for i in range(201)])},
         ("body", "jobs", 0, "steps")),
        ({"jobs": long_job(needs=["x"] * 201)}, ("body", "jobs", 0, "needs")),
        ({"timeout_seconds": 10**30}, ("body", "timeout_seconds")),
        ({"title": "x" * 600_000}, ("body", "title")),
    ],
    ids=["title", "type", "project", "author-name", "author-id", "label-key", "label-value",
         "33-labels", "job-name", "job-key", "201-jobs", "201-steps", "201-needs",
         "huge-int", "600k-title"],
)  # fmt: skip


@on_memory
@TOO_LONG
def test_over_long_strings_and_lists_are_422_naming_the_field(
    known: tuple[Api, str], fields: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    api, _ = known

    problem = assert_problem(api.call("POST", "/v1/tasks", json={**deploy_task(), **fields}), 422)

    assert loc in error_locs(problem), error_locs(problem)


def test_over_long_transition_fields_are_422(known: tuple[Api, str]) -> None:
    api, task_id = known
    cases = [
        ({"job": "build", "status": "failed", "error": {"message": "m" * 10_001}},
         ("body", "transitions", 0, "error", "message")),
        ({"job": "build", "status": "failed", "error": {"message": "m", "code": "c" * 201}},
         ("body", "transitions", 0, "error", "code")),
        ({"job": "b" * 101, "status": "in_progress"}, ("body", "transitions", 0, "job")),
    ]  # fmt: skip

    for item, loc in cases:
        problem = assert_problem(api.report(task_id, item), 422)
        assert loc in error_locs(problem)


def test_every_hostile_body_is_refused_on_every_store(known: tuple[Api, str]) -> None:
    api, task_id = known

    for body in MALFORMED.args[1]:
        assert_problem(post(api, body), 400)
        assert_problem(post(api, body, f"/v1/tasks/{task_id}/transitions"), 400)
    for body, loc in NOT_TEXT.args[1]:
        assert loc in error_locs(assert_problem(post(api, body), 422))
    for fields, loc in TOO_LONG.args[1]:
        response = api.call("POST", "/v1/tasks", json={**deploy_task(), **fields})
        assert loc in error_locs(assert_problem(response, 422))
    for field in SERVER_OWNED:
        response = api.call("POST", "/v1/tasks", json={**deploy_task(), field: 1})
        assert ("body", field) in error_locs(assert_problem(response, 422))
        response = api.report(task_id, {"status": "queued", field: 1})
        assert ("body", "transitions", 0, field) in error_locs(assert_problem(response, 422))


# ---------------------------------------------------------------- size, type, shape


def test_a_body_over_1_mib_is_413(known: tuple[Api, str]) -> None:
    api, task_id = known
    body = b'{"title": "' + b"a" * MIB + b'"}'

    assert_problem(post(api, body), 413)
    assert_problem(post(api, body, f"/v1/tasks/{task_id}/transitions"), 413)
    assert_problem(post(api, body, "/v1/api-keys", Authorization=f"Bearer {ADMIN_TOKEN}"), 413)
    # The declared length alone is enough.
    assert_problem(post(api, b"{}", **{"Content-Length": str(2 * MIB)}), 413)


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"title": "'
    sent = 0
    while sent < total:
        yield b"a" * size
        sent += size
    yield b'"}'


def test_a_chunked_body_over_1_mib_is_413(known: tuple[Api, str]) -> None:
    api, _ = known

    response = post(api, chunks(2 * MIB))

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


def test_a_body_of_exactly_the_limit_is_read(api: Api) -> None:
    body = json.dumps(deploy_task()).encode()
    padded = body[:-1] + b" " * (MIB - len(body)) + b"}"
    assert len(padded) == MIB

    assert post(api, padded).status_code == 201


@on_memory
def test_a_chunked_body_on_a_socket_is_refused_before_it_is_read_whole(
    api: Api, live_servers: Callable[[int], list[LiveServer]]
) -> None:
    (live,) = live_servers(1)
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"a" * (256 * 1024)
        # Send 1.25 MiB, then stop: the answer must come without the rest of the body
        # (the server may close its side early: the answer is already on its way).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(5):
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            received = sock.recv(65536)
            assert received, answer
            answer += received
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"413", answer[:300]
    assert b"application/problem+json" in rest.lower()


@on_memory
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/xml", "", "application/jsonx", "json"],
)  # fmt: skip
def test_a_wrong_content_type_is_415(known: tuple[Api, str], content_type: str) -> None:
    api, task_id = known
    headers = {"Content-Type": content_type} if content_type else {}

    for path in ("/v1/tasks", f"/v1/tasks/{task_id}/transitions", f"/v1/tasks/{task_id}/cancel"):
        response = api.call("POST", path, content=TASK.encode(), headers=headers)
        assert_problem(response, 415)


def test_json_with_a_charset_is_fine(api: Api) -> None:
    response = post(api, TASK.encode(), **{"Content-Type": "application/json; charset=utf-8"})

    assert response.status_code == 201


@on_memory
@pytest.mark.parametrize("body", [b"null", b"[]", b'"task"', b"42", b"true", b""])
def test_a_body_that_is_no_object_is_422(known: tuple[Api, str], body: bytes) -> None:
    api, _ = known

    assert ("body",) in error_locs(assert_problem(post(api, body), 422))


# ---------------------------------------------------------------- routes, methods, queries


@on_memory
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/nope", 404),
        ("GET", "/nope", 404),
        ("GET", "/v2/tasks", 404),
        ("POST", "/v1/tasks/00000000-0000-4000-8000-000000000000/explode", 404),
        ("GET", "/v1/tasks/00000000-0000-4000-8000-000000000000/timeline/extra", 404),
        ("DELETE", "/v1/tasks/00000000-0000-4000-8000-000000000000", 405),
        ("PUT", "/v1/tasks", 405),
        ("PATCH", "/v1/api-keys", 405),
    ],
)
def test_unknown_routes_and_methods_are_problems(
    api: Api, method: str, path: str, status: int
) -> None:
    assert_problem(api.call(method, path, "platform"), status)
    assert_problem(api.client.request(method, path), status)


@pytest.mark.parametrize(
    "query",
    [
        "include_system=perhaps",
        "version=1e3",
        "version=99999999999999999999999",
        "version=9223372036854775807",
        "after_version=9223372036854775808",
        "as_of=%00",
        "as_of=2026-13-45T99:00:00Z",
        "format=json%00",
        "version=1&version=2",
    ],
)
def test_hostile_queries_never_fail_the_server(api: Api, query: str) -> None:
    task_id = api.create_task()["id"]

    for path in ("", "/timeline", "/graph"):
        response = api.call("GET", f"/v1/tasks/{task_id}{path}?{query}", "auditor")
        assert response.status_code < 500, response.text
        assert response.status_code in (200, 404, 422), (path, query, response.status_code)


def test_a_huge_task_id_or_key_id_is_422(api: Api) -> None:
    for path in ("/v1/tasks/" + "a" * 10_000, "/v1/api-keys/" + "f" * 10_000):
        method = "GET" if "tasks" in path else "DELETE"
        assert_problem(api.call(method, path, "platform"), 422)


def test_hostile_headers_never_fail_the_server(api: Api) -> None:
    headers = {
        "X-Request-Id": "r" * 10_000,
        "Idempotency-Key": "k" * 190 + " ~!@#$%^&*",
        "Accept": "application/xml",
    }

    response = api.call("POST", "/v1/tasks", json=deploy_task(), headers=headers)

    assert response.status_code == 201, response.text
