"""The Idempotency-Key header, as both keyed dependencies read it.

Task writes (`api.idempotency`) and log appends (`api.log_idempotency`) keep their
answers in different stores and hash their bodies differently (canonical JSON, raw
text); how a key is validated, scoped, hashed with its request and held while the
request is in flight is the same for both, and lives here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID

from fastapi import Request

from api.deps import Principal
from api.errors import ProblemError
from api.schemas import MAX_IDEMPOTENCY_KEY_LENGTH
from api.services import Services
from domain.idempotency import IdempotentAnswer, IdempotentRequest, answer_id

MAX_KEY_LENGTH = MAX_IDEMPOTENCY_KEY_LENGTH


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


async def read_key(
    request: Request,
    principal: Principal,
    canonical: Callable[[bytes], bytes] = lambda body: body,
) -> IdempotencyKey | None:
    """The request's Idempotency-Key, scoped and hashed with the request; None without one.

    The record is one per (org, principal, key), so tenants and callers never share
    keys. `canonical` says which bodies count as the same (JSON: the same document).
    Read from the headers here rather than declared as a FastAPI parameter, whose own
    check would answer a bad key 422; the OpenAPI document declares it on every POST
    (`api.errors`), with the limits enforced here.
    """
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    if not raw.strip() or len(raw) > MAX_KEY_LENGTH:
        raise ProblemError(
            400, "Bad Idempotency-Key", f"the key must be 1 to {MAX_KEY_LENGTH} characters"
        )
    body = canonical(await request.body())
    return IdempotencyKey(answer_id(principal.org, principal.id, raw), _request_hash(request, body))


def _request_hash(request: Request, body: bytes) -> str:
    """What makes a retry the same request: its method, its path and its body."""
    digest = hashlib.sha256(f"{request.method}\n{request.url.path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def key_reused() -> ProblemError:
    reused = "this key was already used for a request with another body"
    return ProblemError(
        422,
        "Idempotency-Key reused",
        reused,
        errors=[{"loc": ["header", "Idempotency-Key"], "msg": reused}],
    )


@contextmanager
def held_in_flight(services: Services, key: IdempotencyKey) -> Iterator[None]:
    """Holds the key while its request runs; a second request with it meanwhile gets 409."""
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
        yield
    finally:
        with services.in_flight_lock:
            services.in_flight.discard(key.answer_id)
