"""Every error as an RFC 9457 problem document, mapped in one table.

Routes never catch exceptions: domain, application and infrastructure errors travel
up to here. No answer ever carries a stack trace.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import (
    INVALID_REQUEST_EXAMPLE,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    NOT_FOUND_EXAMPLE,
    Problem,
)
from domain.application_errors import (
    AnswerUnavailableError,
    ApiKeyNotFoundError,
    ContentionError,
    StoreUnavailableError,
    TaskNotFoundError,
    WriteOutcomeUnknownError,
)
from domain.errors import (
    ConflictError,
    InvalidRequestError,
    TransitionRefusedError,
    UnknownTargetError,
)
from domain.store_errors import StoreUnreachableError

PROBLEM_MEDIA_TYPE = "application/problem+json"
logger = logging.getLogger("tasktrail.api")


class ProblemError(Exception):
    """Raised by the API layer itself to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail or title)


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _loc(parts: Any) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in parts]


def _validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    fields = ", ".join(".".join(map(str, e["loc"])) for e in errors[:5])
    return problem(422, "Invalid request", f"invalid fields: {fields}", errors=errors)


def _invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidRequestError)
    prefix: list[str | int] = ["body"]
    index = getattr(exc, "index", None)
    if isinstance(exc, UnknownTargetError) and index is not None:
        prefix = ["body", "transitions", index]
    errors = [{"loc": [*prefix, *_loc(p.loc)], "msg": p.msg} for p in exc.problems]
    return problem(422, "Invalid request", str(exc), errors=errors, index=index)


def _refused(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, TransitionRefusedError)
    return problem(
        409,
        "Transition refused",
        f"transition {exc.index} ({exc.target.describe()} → {exc.requested}): {exc.reason}",
        index=exc.index,
        target=exc.target.as_dict(),
        current_status=exc.current,
        requested_status=exc.requested,
        reason=exc.reason,
    )


def _conflict(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConflictError)
    return problem(409, "Conflict", exc.reason, current_status=exc.current_status)


def _not_found(_: Request, exc: Exception) -> Response:
    what = "API key" if isinstance(exc, ApiKeyNotFoundError) else "task"
    return problem(404, "Not found", f"no such {what}")


def _unavailable(_: Request, exc: Exception) -> Response:
    if isinstance(exc, ContentionError):
        return problem(503, "Busy", str(exc), headers={"Retry-After": "1"})
    logger.warning("store unavailable: %s", exc)
    if isinstance(exc, AnswerUnavailableError):
        return problem(
            503,
            "Store unavailable",
            "the write was stored, but the event store failed while its answer was read "
            "back; retry with the same Idempotency-Key to get it",
            headers={"Retry-After": "2"},
        )
    if isinstance(exc, WriteOutcomeUnknownError):
        return problem(
            503,
            "Store unavailable",
            "the event store failed during the write and cannot tell whether it was "
            "stored; retry with the same Idempotency-Key, or read before retrying",
            headers={"Retry-After": "2"},
        )
    return problem(
        503,
        "Store unavailable",
        "the event store cannot be reached; nothing was stored, try again",
        headers={"Retry-After": "2"},
    )


def _http(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized"}
    return problem(
        exc.status_code,
        titles.get(exc.status_code, "Error"),
        str(exc.detail) if exc.detail else None,
        headers=dict(exc.headers or {}),
    )


def _own(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)


def _unexpected(_: Request, exc: Exception) -> Response:
    logger.exception("unexpected error", exc_info=exc)
    return problem(500, "Internal error", "an unexpected error occurred; it has been logged")


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Response]] = {
    RequestValidationError: _validation,
    UnknownTargetError: _invalid,
    InvalidRequestError: _invalid,
    TransitionRefusedError: _refused,
    ConflictError: _conflict,
    TaskNotFoundError: _not_found,
    ApiKeyNotFoundError: _not_found,
    ContentionError: _unavailable,
    StoreUnavailableError: _unavailable,
    # A raw read of the store (outside the applications' retries) that found it gone.
    StoreUnreachableError: _unavailable,
    OperationalError: _unavailable,
    InterfaceError: _unavailable,
    StarletteHTTPException: _http,
    ProblemError: _own,
    Exception: _unexpected,
}


# ---------------------------------------------------------------- what operations declare

Responses = dict[int | str, dict[str, Any]]


def declared(description: str, examples: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A refusal a route declares: a problem document, and what it means on that route
    (`examples`: a summary for each example document)."""
    response: dict[str, Any] = {"model": Problem, "description": description}
    if examples:
        named = {
            summary: {"summary": summary, "value": value} for summary, value in examples.items()
        }
        response["content"] = {"application/json": {"examples": named}}
    return response


# Refusals several routes share; a route declares only those it can answer.
SYSTEM_FORBIDDEN = declared("`include_system` asked for by a role that may not see system work")
NO_SUCH_TASK = declared("No such task in the token's org", {"No such task": NOT_FOUND_EXAMPLE})
INVALID_QUERY = declared(
    "Invalid parameters; `errors` names each", {"Invalid fields": INVALID_REQUEST_EXAMPLE}
)
INVALID_WRITE = declared(
    "Invalid request (`errors` names each field), or an Idempotency-Key reused with another "
    "body; nothing was stored",
    {"Invalid fields": INVALID_REQUEST_EXAMPLE},
)
IN_FLIGHT = declared(
    "A request with the same Idempotency-Key is still in flight; retry after Retry-After"
)
NOT_YET_VISIBLE = declared(
    "The read model did not reach `min_position` in time, or the event store is unreachable; "
    "retry after Retry-After"
)


# Answers given on every operation of a kind, by the middlewares or by the dependencies
# every such route has (the bearer token is looked up in the store on each request).
_EVERY_V1_OPERATION = {
    "401": "Missing, unknown or revoked token",
    "429": "Over the token's request rate, or too many failed authentications from this "
    "address; see Retry-After",
    "503": "The event store is unreachable or busy; retry after Retry-After (a write with "
    "the same Idempotency-Key)",
}
_EVERY_BODY_OPERATION = {
    "413": "Body over the size limit (`TASKTRAIL_MAX_BODY_BYTES`, 1 MiB by default)",
    "415": "A body that is not of the operation's media type",
}
_MALFORMED_JSON = (
    "Malformed JSON (invalid UTF-8, duplicate keys, NaN or Infinity, an integer of over "
    "4300 digits, nesting over 32 levels)"
)
_BAD_KEY = f"an Idempotency-Key that is empty or over {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
_BODY_METHODS = ("post", "put", "patch", "delete")

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 1},
}
_REPLAYED = {
    "description": "`true` on the stored answer to an earlier request with the same "
    "Idempotency-Key and body: this request stored nothing.",
    "schema": {"type": "string", "enum": ["true"]},
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes the write safe to retry: a retry with the same key and the same "
    "body gets the first answer again (with `Idempotent-Replayed: true`) and stores nothing; "
    "the same key with another body is `422`, while its first request runs `409`. Scoped to "
    f"the token's org and caller, kept at least 24 h. An empty key or one over "
    f"{MAX_IDEMPOTENCY_KEY_LENGTH} characters is `400`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
}


def _takes_text(operation: dict[str, Any]) -> bool:
    """A log append: its body is text, which the body guard never parses as JSON."""
    content = operation.get("requestBody", {}).get("content", {})
    return bool(content) and all(media.startswith("text/") for media in content)


def _bad_request(method: str, operation: dict[str, Any]) -> str | None:
    reasons = [] if _takes_text(operation) else [_MALFORMED_JSON]
    if method == "post":
        reasons.append(_BAD_KEY)
    described = "; or ".join(reasons)
    return described[:1].upper() + described[1:] if described else None


def _cross_cutting_answers(path: str, method: str, operation: dict[str, Any]) -> dict[str, str]:
    answers: dict[str, str] = {}
    if path.startswith("/v1/"):
        answers.update(_EVERY_V1_OPERATION)
    if method in _BODY_METHODS:
        answers.update(_EVERY_BODY_OPERATION)
        if bad_request := _bad_request(method, operation):
            answers["400"] = bad_request
    if method == "post":
        answers["409"] = str(IN_FLIGHT["description"])
    return answers


def _with_header(response: dict[str, Any], name: str, header: dict[str, Any]) -> None:
    response.setdefault("headers", {})[name] = dict(header)


def _declare_idempotency(operation: dict[str, Any], responses: dict[str, Any]) -> None:
    """Every POST takes an Idempotency-Key (read by its route's dependency, not declared
    as a FastAPI parameter: FastAPI's own check would make a bad key 422, not 400)."""
    parameters = operation.setdefault("parameters", [])
    if not any(p.get("name", "").lower() == "idempotency-key" for p in parameters):
        parameters.append(dict(_IDEMPOTENCY_KEY))
    for status, response in responses.items():
        if status.startswith("2") or status in ("409", "422"):  # the answers kept for a retry
            _with_header(response, "Idempotent-Replayed", _REPLAYED)


def _declare_cross_cutting(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status, description in _cross_cutting_answers(path, method, operation).items():
        responses.setdefault(
            status,
            {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}},
        )
    if method == "post" and path.startswith("/v1/"):
        _declare_idempotency(operation, responses)
    for status in ("429", "503", *(["409"] if method == "post" else [])):
        if status in responses:
            _with_header(responses[status], "Retry-After", _RETRY_AFTER)


# Examples whose nulls the document must keep (see `example`).
_EXAMPLES: list[dict[str, Any]] = []


def example(document: dict[str, Any]) -> dict[str, Any]:
    """An example answer for the document, shown as written. FastAPI writes the document
    without nulls (`exclude_none`), inside examples too, so a task's `"finished_at": null`
    would vanish from its example although the schema requires it: examples made here are
    put back whole."""
    if not any(document is kept for kept in _EXAMPLES):
        _EXAMPLES.append(document)
    return document


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _whole(shown: Any) -> Any:
    stripped = [original for original in _EXAMPLES if _without_nulls(original) == shown]
    return copy.deepcopy(stripped[0]) if stripped else shown


def _restore_examples(operation: dict[str, Any]) -> None:
    for response in operation.get("responses", {}).values():
        for media in response.get("content", {}).values():
            if "example" in media:
                media["example"] = _whole(media["example"])
            for named in media.get("examples", {}).values():
                if "value" in named:
                    named["value"] = _whole(named["value"])


def _document_answers(app: FastAPI) -> None:
    """Makes the OpenAPI document say what answers really are: errors are problem
    documents, and the answers no route declares itself (the middlewares' refusals, the
    Idempotency-Key, Retry-After) are declared on each operation that can give them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for path, item in build()["paths"].items():
                for method, operation in item.items():
                    responses = operation.setdefault("responses", {})
                    for status, response in responses.items():
                        content = response.get("content", {})
                        if status[:1] in ("4", "5") and "application/json" in content:
                            response["content"] = {PROBLEM_MEDIA_TYPE: content["application/json"]}
                    _declare_cross_cutting(path, method, operation)
                    _restore_examples(operation)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    _document_answers(app)
