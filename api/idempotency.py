"""Idempotency-Key handling (IETF httpapi idempotency-key draft), as a dependency.

Same key + same body → the first answer again, nothing stored; same key + other
body → 422; same key while the first is still in flight → 409. Answers are kept in
the store (see `domain.idempotency`), so this holds across processes and restarts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, ServicesDep
from api.errors import HANDLERS, PROBLEM_MEDIA_TYPE
from api.idempotency_key import (
    IdempotencyKey,
    ReplayError,
    held_in_flight,
    key_reused,
    read_key,
)
from api.presenters import present_answer
from api.schemas import ApiKeyCreated
from domain.errors import (
    ConflictError,
    InvalidRequestError,
    TransitionRefusedError,
    UnknownTargetError,
)
from domain.idempotency import AlreadyAnsweredError


def _canonical_body(body: bytes) -> bytes:
    """The JSON body with keys sorted and no spacing: the same document, the same hash."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return canonical.encode("utf-8")


async def idempotency_key(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> AsyncIterator[IdempotencyKey | None]:
    key = await read_key(request, principal, _canonical_body)
    if key is None:
        yield None
        return
    request.state.idempotency_key = key
    existing = await run_in_threadpool(services.ledger.find_answer, key.answer_id)
    # A key that answered a log append (kept in the log store) was another request.
    used_for_a_log = (
        existing is None
        and await run_in_threadpool(services.logs.find_answer, key.answer_id) is not None
    )
    if used_for_a_log or (existing is not None and existing.request_hash != key.request_hash):
        raise key_reused()
    if existing is not None:
        raise ReplayError(existing)
    with held_in_flight(services, key):
        yield key


IdempotencyDep = Annotated[IdempotencyKey | None, Depends(idempotency_key)]


def _replay(request: Request, exc: Exception) -> Response:
    """Answers a retry with what the first attempt answered."""
    assert isinstance(exc, ReplayError)
    answer = exc.answer
    headers = {"Idempotent-Replayed": "true"}
    if answer.body is not None:  # a refusal, or an answer kept whole (a batch's)
        media_type = PROBLEM_MEDIA_TYPE if answer.status_code >= 400 else "application/json"
        return JSONResponse(answer.body, answer.status_code, headers=headers, media_type=media_type)
    document = present_answer(request.app.state.services.ledger, answer)
    if answer.status_code == 201:
        collection = "api-keys" if isinstance(document, ApiKeyCreated) else "tasks"
        headers["Location"] = f"/v1/{collection}/{document.id}"
    return JSONResponse(document.model_dump(mode="json"), answer.status_code, headers=headers)


def _already_answered(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AlreadyAnsweredError)
    return _replay(request, ReplayError(exc.answer))


def _remembering_refusals(
    handler: Callable[[Request, Exception], Response],
) -> Callable[[Request, Exception], Response]:
    """Wraps a refusal's handler so a keyed request's refusal is replayed on retry."""

    def handle(request: Request, exc: Exception) -> Response:
        response = handler(request, exc)
        key: IdempotencyKey | None = getattr(request.state, "idempotency_key", None)
        if key is not None and isinstance(response, JSONResponse):
            body = json.loads(bytes(response.body))
            request.app.state.services.ledger.record_refusal(
                key.request(response.status_code), response.status_code, body
            )
        return response

    return handle


def install(app: FastAPI) -> None:
    app.add_exception_handler(ReplayError, _replay)
    app.add_exception_handler(AlreadyAnsweredError, _already_answered)
    for refusal in (TransitionRefusedError, ConflictError, InvalidRequestError, UnknownTargetError):
        app.add_exception_handler(refusal, _remembering_refusals(HANDLERS[refusal]))
