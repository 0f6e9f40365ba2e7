"""Answers to requests sent with an Idempotency-Key, kept in the store.

The record is saved in the same transaction as the changes the request made, so a
retry either finds the answer (and stores nothing) or finds nothing (and the first
attempt stored nothing either). Records are never deleted: kept well over 24 h.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.stamped import StampedEvent

_NAMESPACE = uuid5(NAMESPACE_URL, "https://tasktrail.dev/idempotency-keys")


def answer_id(scope: str, principal_id: str, key: str) -> UUID:
    """The record's id: one per (org scope, principal, key), so tenants never share keys."""
    return uuid5(_NAMESPACE, "\x1f".join((scope, principal_id, key)))


@dataclass(frozen=True)
class IdempotentRequest:
    """What a command needs to record its answer: where, for which request, with which code."""

    answer_id: UUID
    request_hash: str
    status_code: int


class IdempotentAnswer(Aggregate):
    """What tasktrail answered the first time a keyed request arrived."""

    class Event(StampedEvent, Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        pass

    class IdempotentRequestAnswered(Created):
        request_hash: str
        status_code: int
        subject_id: UUID | None
        subject_version: int | None
        body: dict[str, Any] | None
        occurred_at: datetime

    @classmethod
    def record(
        cls,
        request: IdempotentRequest,
        *,
        now: datetime,
        subject_id: UUID | None = None,
        subject_version: int | None = None,
        body: dict[str, Any] | None = None,
        status_code: int | None = None,
    ) -> IdempotentAnswer:
        return cls._create(
            cls.IdempotentRequestAnswered,
            id=request.answer_id,
            request_hash=request.request_hash,
            status_code=status_code or request.status_code,
            subject_id=subject_id,
            subject_version=subject_version,
            body=body,
            occurred_at=now,
        )

    def __init__(
        self,
        request_hash: str,
        status_code: int,
        subject_id: UUID | None,
        subject_version: int | None,
        body: dict[str, Any] | None,
        occurred_at: datetime,
    ) -> None:
        self.request_hash = request_hash
        self.status_code = status_code
        self.subject_id = subject_id
        self.subject_version = subject_version
        self.body = body
        self.answered_at = occurred_at


class AlreadyAnsweredError(Exception):
    """Raised when another attempt of the same keyed request committed first."""

    def __init__(self, answer: IdempotentAnswer):
        self.answer = answer
        super().__init__(f"request {answer.id} was already answered")
