"""API keys: who may call tasktrail, for which org, in which role.

A key's id is derived from the hash of its token, so a bearer token is looked up
directly (one stream read), never by scanning; the token itself is never stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import ConflictError
from domain.stamped import StampedEvent

ROLES = ("reader", "writer", "auditor", "admin")
PLATFORM_SCOPE = "*"
TOKEN_PREFIX = "tt_"
_KEY_NAMESPACE = uuid5(NAMESPACE_URL, "https://tasktrail.dev/api-keys")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def key_id_for_token(token: str) -> UUID:
    return uuid5(_KEY_NAMESPACE, hash_token(token))


def can_see(scope: str | None, org: str) -> bool:
    """Whether a caller scoped to `scope` (None or `*`: every org) may see `org`'s streams."""
    return scope in (None, PLATFORM_SCOPE) or org == scope


class ApiKey(Aggregate):
    """A bearer token's grant: an org (or `*`) and a role, until revoked."""

    class Event(StampedEvent, Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        pass

    @classmethod
    def issue(cls, *, token: str, org: str, role: str, name: str, now: datetime) -> ApiKey:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return cls._create(
            cls.ApiKeyIssued,
            id=key_id_for_token(token),
            org=org,
            role=role,
            name=name,
            token_hash=hash_token(token),
            occurred_at=now,
        )

    class ApiKeyIssued(Created):
        org: str
        role: str
        name: str
        token_hash: str
        occurred_at: datetime

    @event(ApiKeyIssued)
    def __init__(
        self, org: str, role: str, name: str, token_hash: str, occurred_at: datetime
    ) -> None:
        self.org = org
        self.role = role
        self.name = name
        self.token_hash = token_hash
        self.created_at = occurred_at
        self.revoked_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def revoke(self, now: datetime) -> None:
        if not self.is_active:
            raise ConflictError("API key is already revoked", current_status="revoked")
        self._revoked(occurred_at=now)

    @event("ApiKeyRevoked")
    def _revoked(self, occurred_at: datetime) -> None:
        self.revoked_at = occurred_at
