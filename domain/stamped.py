"""Events stamped with who acted, in which command and for which request.

Every event of tasktrail carries these three, set from `domain.context` when the
event is triggered, so no command has to pass them along: the actor is the audit
trail, the command id is how an application recognises its own events after an
ambiguous commit (`domain.resilient_writes`), the request id ties an event to the
HTTP request (and its log lines) that caused it.

Only this shared base lives here: the concrete event classes stay nested in their
aggregates, because stored events are decoded by their class's topic
(`module:qualname`), and moving one would orphan every event already stored.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from eventsourcing.domain import DomainEvent

from domain.context import current_actor, current_command_id, current_request_id


class StampedEvent(DomainEvent):
    """An event that records its actor, command id and request id."""

    actor: dict[str, Any] = field(default_factory=current_actor, init=False)
    command_id: str = field(default_factory=current_command_id, init=False)
    request_id: str | None = field(default_factory=current_request_id, init=False)
