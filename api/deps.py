"""Dependencies declared once: the services, the authenticated principal, role checks.

Dependencies that do no I/O are `async def`: FastAPI runs those on the event loop
instead of sending each through its thread pool (a thread hop apiece, per request).
`get_principal` reads the API key from the store, so it stays a plain `def`.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.errors import ProblemError
from api.schemas import ORG_PATTERN
from api.services import Services
from domain.api_key import PLATFORM_SCOPE
from domain.application import TaskLedger
from domain.context import acting_as, request_id_cvar

CAPABILITIES: dict[str, frozenset[str]] = {
    "read": frozenset({"reader", "writer", "auditor", "admin"}),
    "write": frozenset({"writer", "admin"}),
    "see_system": frozenset({"auditor", "admin"}),
    "audit": frozenset({"auditor", "admin"}),
    "manage_keys": frozenset({"admin"}),
}

ORG_NAME = re.compile(rf"\*|{ORG_PATTERN.strip('^$')}")

bearer = HTTPBearer(
    auto_error=False,
    description="An API key's token, or the platform administrator's token.",
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key (or the admin token), its org scope and role."""

    id: str
    name: str
    org: str
    role: str
    kind: str = "api_key"

    @property
    def is_platform(self) -> bool:
        return self.org == PLATFORM_SCOPE

    def can(self, capability: str) -> bool:
        return self.role in CAPABILITIES[capability]

    def require(self, capability: str) -> None:
        if not self.can(capability):
            raise ProblemError(
                403, "Forbidden", f"the {self.role} role may not {capability.replace('_', ' ')}"
            )

    def org_for(self, requested: str | None, where: str = "query") -> str:
        """The org a call acts on: the token's own, or the one a `*` token names
        (`?org=` for lists, feeds and exports; `org` in the body of a new task)."""
        if not self.is_platform:
            if requested not in (None, self.org):
                raise ProblemError(403, "Forbidden", f"this token is scoped to org {self.org}")
            return self.org
        if requested is None:
            raise ProblemError(
                422,
                "Invalid request",
                "a platform token must name the org",
                errors=[{"loc": [where, "org"], "msg": "Field required"}],
            )
        if not ORG_NAME.fullmatch(requested):
            # Checked here too, so a route that forgets the declaration cannot pass an
            # arbitrary string on to a query, a header or a file name.
            raise ProblemError(
                422,
                "Invalid request",
                "not an org name",
                errors=[{"loc": [where, "org"], "msg": f"must match {ORG_NAME.pattern}"}],
            )
        return requested

    @property
    def actor(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind}

    @contextmanager
    def acting(self, request_id: str | None = None) -> Iterator[None]:
        """Every event stored inside records this principal as its actor."""
        token = request_id_cvar.set(request_id)
        try:
            with acting_as(self.actor):
                yield
        finally:
            request_id_cvar.reset(token)


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_ledger(services: ServicesDep) -> TaskLedger:
    return services.ledger


LedgerDep = Annotated[TaskLedger, Depends(get_ledger)]


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def resolve_token(services: Services, token: str) -> Principal | None:
    """Who a bearer token stands for now, or None (unknown or revoked): keys are read
    from the store, so a key revoked by any process is seen at once."""
    admin_token = services.admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(
            id="admin", name="platform administrator", org="*", role="admin", kind="admin"
        )
    if len(token) > 200:
        return None
    key = services.ledger.find_key(token)
    if key is None:
        return None
    return Principal(id=str(key["id"]), name=key["name"], org=key["org"], role=key["role"])


def _bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing bearer token")
    return credentials.credentials


def get_principal(services: ServicesDep, credentials: Credentials) -> Principal:
    """Resolves the bearer token on every request, so a revoked key fails at once."""
    principal = resolve_token(services, _bearer_token(credentials))
    if principal is None:
        raise _unauthorized("unknown or revoked token")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

# How long a live stream goes at most without asking whether its token still works.
TOKEN_RECHECK_SECONDS = 2.0
# A stream's last words once its token is revoked: a comment, which no SSE client
# takes for an event (a reconnect is then answered 401).
REVOKED_MESSAGE = ": the token was revoked\n\n"


@dataclass
class TokenCheck:
    """Whether the token a live stream was opened with still works.

    A stream outlives the request's one look at its token: it asks again, of the
    store (as every request does, never a cache that could miss a revocation made in
    another process), at most every `every` seconds, and ends once the key is revoked.
    """

    services: Services
    token: str
    every: float
    checked_at: float = field(default_factory=time.monotonic)

    def due_in(self) -> float:
        """Seconds until the next check is due (0: now)."""
        return max(0.0, self.checked_at + self.every - time.monotonic())

    async def revoked(self) -> bool:
        """True once the token stopped working (asked only when a check is due)."""
        if self.due_in() > 0:
            return False
        principal = await run_in_threadpool(resolve_token, self.services, self.token)
        self.checked_at = time.monotonic()
        return principal is None


async def token_check(services: ServicesDep, credentials: Credentials) -> TokenCheck:
    """The stream's token check: at every heartbeat, and at least every few seconds."""
    every = min(services.settings.sse_heartbeat_seconds, TOKEN_RECHECK_SECONDS)
    return TokenCheck(services, _bearer_token(credentials), every)


TokenCheckDep = Annotated[TokenCheck, Depends(token_check)]


def _requiring(capability: str):  # type: ignore[no-untyped-def]
    async def dependency(principal: PrincipalDep) -> Principal:
        principal.require(capability)
        return principal

    return dependency


Reader = Annotated[Principal, Depends(_requiring("read"))]
Writer = Annotated[Principal, Depends(_requiring("write"))]
Auditor = Annotated[Principal, Depends(_requiring("audit"))]
Admin = Annotated[Principal, Depends(_requiring("manage_keys"))]


async def request_id(request: Request) -> str | None:
    """The request's id (`X-Request-ID`, or one made up by `RequestContext`)."""
    made: str | None = getattr(request.state, "request_id", None)
    if made is not None:
        return made
    value = request.headers.get("x-request-id")
    return value[:200] if value else None


RequestIdDep = Annotated[str | None, Depends(request_id)]
