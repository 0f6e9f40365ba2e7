"""Every error as an RFC 9457 problem document, mapped in one table.

Routes never catch exceptions: domain, application and infrastructure errors travel
up to here. No answer ever carries a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

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


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 1},
}
# Answers the middlewares give before any route runs, on every `/v1` operation.
_EVERY_V1_OPERATION = {
    "401": "Missing, unknown or revoked token",
    "429": "Over the token's request rate, or too many failed authentications from this "
    "address; see Retry-After",
}
_EVERY_BODY_OPERATION = {
    "400": "Malformed JSON (invalid UTF-8, duplicate keys, nesting over 32 levels)",
    "413": "Body over the size limit (`TASKTRAIL_MAX_BODY_BYTES`, 1 MiB by default)",
    "415": "A body that is not of the operation's media type",
}
_BODY_METHODS = ("post", "put", "patch", "delete")


def _declare_middleware_answers(path: str, method: str, responses: dict[str, Any]) -> None:
    if not path.startswith("/v1/"):
        return
    answers = dict(_EVERY_V1_OPERATION)
    if method in _BODY_METHODS:
        answers.update(_EVERY_BODY_OPERATION)
    for status, description in answers.items():
        if status not in responses:
            responses[status] = {
                "description": description,
                "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}},
            }
    responses["429"].setdefault("headers", {})["Retry-After"] = _RETRY_AFTER


def _document_problems(app: FastAPI) -> None:
    """Makes the OpenAPI document say what errors really are: problem documents, and
    declares the refusals of the middlewares (rate limit, body guard) on each operation."""
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
                    _declare_middleware_answers(path, method, responses)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    _document_problems(app)
