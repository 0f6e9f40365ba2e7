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

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, ServicesDep
from api.idempotency_key import (
    IdempotencyKey,
    ReplayError,
    held_in_flight,
    key_reused,
    read_key,
)
from domain.idempotency import IdempotentAnswer


def _check(existing: IdempotentAnswer | None, key: IdempotencyKey) -> None:
    if existing is not None and existing.request_hash != key.request_hash:
        raise key_reused()


async def log_idempotency_key(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> AsyncIterator[IdempotencyKey | None]:
    key = await read_key(request, principal)
    if key is None:
        yield None
        return
    refused = await run_in_threadpool(services.ledger.find_answer, key.answer_id)
    _check(refused, key)
    if refused is not None:
        raise ReplayError(refused)  # a refusal (or a task write's answer, by its hash)
    # A stored append is replayed by `StepLogs.append` itself, which also settles races.
    _check(await run_in_threadpool(services.logs.find_answer, key.answer_id), key)
    with held_in_flight(services, key):
        # The installed refusal handlers remember a keyed refusal in the ledger.
        request.state.idempotency_key = key
        yield key


LogIdempotencyDep = Annotated[IdempotencyKey | None, Depends(log_idempotency_key)]
