"""Projections that apply many events in one transaction, with one tracking record.

A `BatchedProjection` is a library `Projection` (so the library's own
`ProjectionRunner` can drive it, one event per transaction) whose `apply` method
maps each event class to one command of its view's batch writer. Our runner calls
`process_batch` instead: the same mapping, hundreds of events per transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import resolve_topic

from projections.tracked_view import TrackedView

TView = TypeVar("TView", bound=TrackedView)


@cache
def _event_class(topic: str) -> type:
    return resolve_topic(topic)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class EventHeader:
    """A stored event whose state a projection does not need: whose it is, and which version.

    Decoding an event costs more than reading it; a projection that only counts an
    event (the task list, for most job and step events) gets its header instead.
    """

    originator_id: UUID
    originator_version: int
    event_class: type


class BatchedProjection(Projection[TView]):  # type: ignore[type-var]
    """Maps events to view commands; subclasses register `apply` per event class."""

    # Events of these classes (and subclasses) are applied; others are only counted
    # past (their position is still tracked).
    event_classes: tuple[type, ...] = ()
    # Events of these classes are applied as an `EventHeader`, without decoding.
    header_classes: tuple[type, ...] = ()

    def events(self, notifications: Sequence[Any], mapper: Any) -> list[tuple[Any, int]]:
        """The notifications this projection applies, as (event or header, position)."""
        events: list[tuple[Any, int]] = []
        for notification in notifications:
            cls = _event_class(notification.topic)
            if not issubclass(cls, self.event_classes):
                continue
            if issubclass(cls, self.header_classes):
                header = EventHeader(
                    notification.originator_id, notification.originator_version, cls
                )
                events.append((header, notification.id))
            else:
                events.append((mapper.to_domain_event(notification), notification.id))
        return events

    def process_batch(
        self,
        events: Sequence[tuple[Any, int]],
        *,
        tracking: Tracking,
        expected: int | None,
    ) -> None:
        """Applies `(event, position)` pairs and records `tracking`, all in one transaction."""
        streams = list({event.originator_id for event, _ in events})
        apply = self.apply  # one dispatcher lookup per batch, not per event
        with self.view.batch(tracking=tracking, expected=expected, streams=streams) as batch:
            for event, position in events:
                apply(event, position, batch)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """The library's one-event-per-transaction entry point."""
        events = [(domain_event, tracking.notification_id)]
        if not isinstance(domain_event, self.event_classes):
            events = []
        self.process_batch(events, tracking=tracking, expected=None)

    # Each subclass declares its own dispatcher (a shared one would mix registrations):
    #     @singledispatchmethod
    #     def apply(self, event, position, batch): ...
    def apply(self, event: Any, position: int, batch: Any) -> None:
        raise NotImplementedError
