"""Per-token rate limiting: a token bucket per bearer token, `429` past it.

A pure ASGI middleware, in this process's memory: each process of a deployment
keeps its own buckets, so N processes behind a balancer admit up to N times the
rate. Buckets are keyed by the SHA-256 of the token (no token is kept in memory
beyond the request) and are only touched on the event loop: no lock, a dict
lookup and a little arithmetic per request.

Guessing tokens is slowed per client address instead: an answer of `401` costs
the caller's address one unit of a small bucket, and while that bucket is empty
every request from the address whose token has no bucket yet (a token never seen
to work) is answered `429` before it is tried. Tokens already seen to work keep
their own bucket, so a neighbour guessing from the same address does not lock
them out; a token that answers `401` (unknown, revoked) loses its bucket.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PROBLEM_MEDIA_TYPE

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Past this many buckets, full ones (idle long enough to refill) are forgotten: a
# full bucket and no bucket admit exactly the same.
MAX_BUCKETS = 100_000


@dataclass(frozen=True)
class Rate:
    """`per_second` units refill continuously up to `burst`; 0 per second means no limit."""

    per_second: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


class Buckets:
    """Token buckets by key: `take(key)` spends one unit, or says how long to wait."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        # key -> (units left, when they were counted)
        self.levels: dict[bytes | str, tuple[float, float]] = {}

    def __contains__(self, key: bytes | str) -> bool:
        return key in self.levels

    def _level(self, key: bytes | str, now: float) -> float:
        units, counted = self.levels.get(key, (self.rate.burst, now))
        return min(self.rate.burst, units + (now - counted) * self.rate.per_second)

    def take(self, key: bytes | str) -> float:
        """Spends one unit: 0 when admitted, else the seconds until one is available."""
        now = self.clock()
        units = self._level(key, now)
        if units < 1:
            self.levels[key] = (units, now)
            return (1 - units) / self.rate.per_second
        if len(self.levels) >= MAX_BUCKETS and key not in self.levels:
            self._forget_full(now)
        self.levels[key] = (units - 1, now)
        return 0.0

    def wait(self, key: bytes | str) -> float:
        """Seconds until `key` has a unit (0: has one now); spends nothing."""
        units = self._level(key, self.clock())
        return 0.0 if units >= 1 else (1 - units) / self.rate.per_second

    def forget(self, key: bytes | str) -> None:
        self.levels.pop(key, None)

    def _forget_full(self, now: float) -> None:
        full = [key for key in self.levels if self._level(key, now) >= self.rate.burst]
        for key in full:
            del self.levels[key]
        if len(self.levels) >= MAX_BUCKETS:  # a flood of distinct keys: start afresh
            self.levels.clear()


def bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class RateLimit:
    def __init__(self, app: ASGIApp, per_token: Rate, per_address_failures: Rate) -> None:
        self.app = app
        self.tokens = Buckets(per_token) if per_token.enabled else None
        self.failures = Buckets(per_address_failures) if per_address_failures.enabled else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        key = hashlib.sha256(token).digest() if token is not None else None
        address = client_address(scope)
        known = key is not None and self.tokens is not None and key in self.tokens
        if self.failures is not None and not known and (wait := self.failures.wait(address)):
            await _too_many(send, wait, "too many failed authentications from this address")
            return
        if key is not None and self.tokens is not None and (wait := self.tokens.take(key)):
            await _too_many(send, wait, "this token's request rate is over its limit")
            return

        async def watching(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                if key is not None and self.tokens is not None:
                    self.tokens.forget(key)
                if self.failures is not None:
                    self.failures.take(address)
            await send(message)

        await self.app(scope, receive, watching)


async def _too_many(send: Send, wait: float, detail: str) -> None:
    retry_after = max(1, math.ceil(wait))
    payload = json.dumps(
        {
            "type": "about:blank",
            "title": "Too many requests",
            "status": 429,
            "detail": f"{detail}; retry after {retry_after} s",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(payload)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
