"""Idempotency-Key handling (IETF httpapi idempotency-key draft), as a dependency.

Same key + same body → the first answer again, nothing stored; same key + other
body → 422; same key while the first is still in flight → 409. Answers are kept in
the store (see `domain.idempotency`), so this holds across processes and restarts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, ServicesDep
from api.errors import HANDLERS, PROBLEM_MEDIA_TYPE, ProblemError
from api.presenters import present_answer
from api.schemas import ApiKeyCreated
from domain.errors import (
    ConflictError,
    InvalidRequestError,
    TransitionRefusedError,
    UnknownTargetError,
)
from domain.idempotency import (
    AlreadyAnsweredError,
    IdempotentAnswer,
    IdempotentRequest,
    answer_id,
)

MAX_KEY_LENGTH = 200


class ReplayError(Exception):
    """Raised to answer a retried request with the answer its first attempt got."""

    def __init__(self, answer: IdempotentAnswer):
        self.answer = answer
        super().__init__("replay")


@dataclass(frozen=True)
class IdempotencyKey:
    answer_id: UUID
    request_hash: str

    def request(self, status_code: int) -> IdempotentRequest:
        """What the command records as its answer, in the same write as its changes."""
        return IdempotentRequest(self.answer_id, self.request_hash, status_code)


def _request_hash(request: Request, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    material = f"{request.method}\n{request.url.path}\n{canonical}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


async def idempotency_key(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> AsyncIterator[IdempotencyKey | None]:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        yield None
        return
    if not raw.strip() or len(raw) > MAX_KEY_LENGTH:
        raise ProblemError(
            400, "Bad Idempotency-Key", f"the key must be 1 to {MAX_KEY_LENGTH} characters"
        )
    key = IdempotencyKey(
        answer_id(principal.org, principal.id, raw), _request_hash(request, await request.body())
    )
    request.state.idempotency_key = key
    existing = await run_in_threadpool(services.ledger.find_answer, key.answer_id)
    # A key that answered a log append (kept in the log store) was another request.
    used_for_a_log = (
        existing is None
        and await run_in_threadpool(services.logs.find_answer, key.answer_id) is not None
    )
    if used_for_a_log or (existing is not None and existing.request_hash != key.request_hash):
        reused = "this key was already used for a request with another body"
        raise ProblemError(
            422,
            "Idempotency-Key reused",
            reused,
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": reused}],
        )
    if existing is not None:
        raise ReplayError(existing)
    with services.in_flight_lock:
        if key.answer_id in services.in_flight:
            raise ProblemError(
                409,
                "Request in flight",
                "a request with this Idempotency-Key is still being processed",
                headers={"Retry-After": "1"},
            )
        services.in_flight.add(key.answer_id)
    try:
        yield key
    finally:
        with services.in_flight_lock:
            services.in_flight.discard(key.answer_id)


IdempotencyDep = Annotated[IdempotencyKey | None, Depends(idempotency_key)]


def _replay(request: Request, exc: Exception) -> Response:
    """Answers a retry with what the first attempt answered."""
    assert isinstance(exc, ReplayError)
    answer = exc.answer
    headers = {"Idempotent-Replayed": "true"}
    if answer.body is not None:  # the first attempt was refused
        return JSONResponse(
            answer.body, answer.status_code, headers=headers, media_type=PROBLEM_MEDIA_TYPE
        )
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
