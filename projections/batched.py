"""Projections that apply many events in one transaction, with one tracking record.

A `BatchedProjection` is a library `Projection` (so the library's own
`ProjectionRunner` can drive it, one event per transaction) whose `apply` method
maps each event class to one command of its view's batch writer. Our runner calls
`process_batch` instead: the same mapping, hundreds of events per transaction.

`apply` gets an `EventRecord`, not a domain event: decoding a whole event costs more
than reading it, and a projection reads a few of its fields (`projections.decoding`).
Events a projection only counts (`counted_classes`) are not even parsed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import singledispatchmethod
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import Mapper, Notification, Tracking
from eventsourcing.projection import Projection

from projections.decoding import StateDecoder, event_class
from projections.tracked_view import TrackedView

TView = TypeVar("TView", bound=TrackedView)
_event_class = event_class  # the name the tests know
Handler = Callable[[Any, int, Any], None]


@dataclass(slots=True)  # not frozen: a frozen dataclass takes four times as long to make
class EventRecord:
    """One stored event as a projection reads it: whose, which version, which class,
    and its state, parsed but not decoded (empty for an event the projection counts).

    `value(name)` is a field decoded, as the domain event would hold it. Handed over
    by the library's runner (or of a class that upcasts old versions), the state is
    decoded already.
    """

    originator_id: UUID
    originator_version: int
    event_class: type
    state: dict[str, Any]
    decoder: StateDecoder | None = None  # None: `state` is decoded already

    @classmethod
    def of(cls, domain_event: Any) -> EventRecord:
        """A decoded domain event as a record."""
        state = dict(vars(domain_event))
        originator_id, version = state.pop("originator_id"), state.pop("originator_version")
        return cls(originator_id, version, type(domain_event), state)

    def value(self, name: str) -> Any:
        """The field `name` (None when absent), decoded."""
        return self.decoded(self.state.get(name))

    def decoded(self, value: Any) -> Any:
        """A value of `state`, decoded."""
        if self.decoder is None or type(value) not in (dict, list):
            return value
        return self.decoder.decoded(value)


class BatchedProjection(Projection[TView]):  # type: ignore[type-var]
    """Maps events to view commands; subclasses register `apply` per event class."""

    # Events of these classes (and subclasses) are applied; others are only counted
    # past (their position is still tracked).
    event_classes: tuple[type, ...] = ()
    # Events of these classes are applied with an empty state: never parsed.
    counted_classes: tuple[type, ...] = ()

    def __init__(self, view: TView):
        super().__init__(view)
        self._decoder: StateDecoder | None = None
        self._handlers: dict[type, Handler | None] = {}

    def handler(self, cls: type) -> Handler | None:
        """The `apply` registered for events of `cls`, bound (None: not applied)."""
        if cls not in self._handlers:
            handler = None
            if issubclass(cls, self.event_classes):
                handler = self.apply  # (reading it registers the dispatcher's late methods)
                method = inspect.getattr_static(type(self), "apply")
                if isinstance(method, singledispatchmethod):
                    handler = method.dispatcher.dispatch(cls).__get__(self)
            self._handlers[cls] = handler
        return self._handlers[cls]

    def events(
        self, notifications: Sequence[Notification], mapper: Mapper[Any]
    ) -> list[tuple[EventRecord, int]]:
        """The notifications this projection applies, as (record, position)."""
        decoder = self.decoder(mapper)
        return [
            (record, notification.id)
            for notification in notifications
            if (record := self.record(notification, decoder)) is not None
        ]

    def decoder(self, mapper: Mapper[Any]) -> StateDecoder:
        """The decoder of `mapper`'s events (made once)."""
        if self._decoder is None or self._decoder.mapper is not mapper:
            self._decoder = StateDecoder(mapper)
        return self._decoder

    def record(self, notification: Notification, decoder: StateDecoder) -> EventRecord | None:
        """The notification as this projection reads it (None: not applied)."""
        cls = event_class(notification.topic)
        if self.handler(cls) is None:
            return None
        originator_id: Any = notification.originator_id
        if issubclass(cls, self.counted_classes):
            return EventRecord(originator_id, notification.originator_version, cls, {})
        if getattr(cls, "class_version", 1) > 1:  # old versions are upcast by the mapper
            return EventRecord.of(decoder.mapper.to_domain_event(notification))
        state = decoder.state(notification)
        return EventRecord(originator_id, notification.originator_version, cls, state, decoder)

    def process_batch(
        self,
        events: Sequence[tuple[EventRecord, int]],
        *,
        tracking: Tracking,
        expected: int | None,
    ) -> None:
        """Applies `(record, position)` pairs (or domain events, in place of records) and
        records `tracking`, all in one transaction."""
        records = [
            (event if type(event) is EventRecord else EventRecord.of(event), position)
            for event, position in events
        ]
        streams = list({record.originator_id for record, _ in records})
        with self.view.batch(tracking=tracking, expected=expected, streams=streams) as batch:
            for record, position in records:
                handler = self.handler(record.event_class)
                if handler is not None:
                    handler(record, position, batch)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """The library's one-event-per-transaction entry point."""
        events = [(domain_event, tracking.notification_id)]
        self.process_batch(events, tracking=tracking, expected=None)

    # Each subclass declares its own dispatcher (a shared one would mix registrations):
    #     @singledispatchmethod
    #     def apply(self, event: EventRecord, position, batch): ...
    # registered per event class; `process_batch` dispatches on `event.event_class`.
    def apply(self, event: EventRecord, position: int, batch: Any) -> None:
        raise NotImplementedError
