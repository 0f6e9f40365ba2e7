"""Idempotency-Key for log appends: the answer lives in the log store, with the chunk.

A task write keeps its answer in the task ledger, in the same transaction as its
events. A log append's events go to the log store, so its answer is saved there, in
the one write that stores the chunk (`StepLogs.append`): a retry finds the answer
and stores nothing, and a crash can never leave a chunk without its answer or the
reverse. The key's record id is the same as for task writes (org, principal, key),
so the same key means the same request whichever store answered it.

Refusals (`409` never started, `422`) are remembered where every refusal is, in
the ledger (`api.idempotency`), and replayed from there. The request hash covers
the body's exact bytes: log text is not JSON, and two texts that differ only in
spacing are two different chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, ServicesDep
from api.errors import ProblemError
from api.idempotency import MAX_KEY_LENGTH, IdempotencyKey, ReplayError
from domain.idempotency import IdempotentAnswer, answer_id


def _request_hash(request: Request, body: bytes) -> str:
    digest = hashlib.sha256(f"{request.method}\n{request.url.path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def _reused() -> ProblemError:
    reused = "this key was already used for a request with another body"
    return ProblemError(
        422,
        "Idempotency-Key reused",
        reused,
        errors=[{"loc": ["header", "Idempotency-Key"], "msg": reused}],
    )


def _check(existing: IdempotentAnswer | None, key: IdempotencyKey) -> None:
    if existing is not None and existing.request_hash != key.request_hash:
        raise _reused()


async def log_idempotency_key(
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
    refused = await run_in_threadpool(services.ledger.find_answer, key.answer_id)
    _check(refused, key)
    if refused is not None:
        raise ReplayError(refused)  # a refusal (or a task write's answer, by its hash)
    # A stored append is replayed by `StepLogs.append` itself, which also settles races.
    _check(await run_in_threadpool(services.logs.find_answer, key.answer_id), key)
    with services.in_flight_lock:
        if key.answer_id in services.in_flight:
            raise ProblemError(
                409,
                "Request in flight",
                "a request with this Idempotency-Key is still being processed",
                headers={"Retry-After": "1"},
            )
        services.in_flight.add(key.answer_id)
    # The installed refusal handlers remember a keyed refusal in the ledger.
    request.state.idempotency_key = key
    try:
        yield key
    finally:
        with services.in_flight_lock:
            services.in_flight.discard(key.answer_id)


LogIdempotencyDep = Annotated[IdempotencyKey | None, Depends(log_idempotency_key)]
