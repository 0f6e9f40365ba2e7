"""Runners: follow the event store and apply a projection's events, a batch at a time.

A batch is up to `batch_size` notifications read with the library's
`select_notifications`, decoded with the application's mapper, applied by the
projection and recorded with one tracking record (the batch's last notification id)
in the same transaction. A runner that crashes resumes from the last committed
batch: nothing applied twice, nothing missed. Notification ids have gaps (a rolled
back insert consumes its sequence values): a runner never expects contiguity, only
order.

Every notification moves the position, also those the projection ignores (an
idempotency record, say), so `min_position` of any write is reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking

from projections.batched import BatchedProjection
from projections.coordination import Coordinator
from projections.elected import ElectedWorker

logger = logging.getLogger("tasktrail.projections")

BatchCallback = Callable[[int, int], None]  # (position reached, events read in the batch)


@dataclass(frozen=True)
class Applied:
    """What one call applied: notifications read, and the position reached."""

    notifications: int
    position: int


def apply_next_batch(
    app: Any,
    projection: BatchedProjection[Any],
    position: int,
    batch_size: int,
    *,
    until: int | None = None,
) -> Applied:
    """Reads the notifications after `position` (up to `until`) and applies them as one batch."""
    notifications = app.recorder.select_notifications(
        start=position, limit=batch_size, stop=until, inclusive_of_start=False
    )
    if not notifications:
        return Applied(0, position)
    events = projection.events(notifications, app.mapper)
    last = notifications[-1].id
    projection.process_batch(events, tracking=Tracking(app.name, last), expected=position)
    return Applied(len(notifications), last)


def catch_up(
    app: Any,
    projection: BatchedProjection[Any],
    *,
    until: int | None = None,
    batch_size: int = 500,
    on_batch: BatchCallback | None = None,
) -> int:
    """Applies every event up to `until` (default: the store's head now); the position reached."""
    head = (app.recorder.max_notification_id() or 0) if until is None else until
    position = projection.view.max_tracking_id(app.name) or 0
    while position < head:
        applied = apply_next_batch(app, projection, position, batch_size, until=head)
        if applied.notifications == 0:
            break
        position = applied.position
        if on_batch is not None:
            on_batch(position, applied.notifications)
    return position


class BatchRunner(ElectedWorker):
    """One projection's runner: a thread that follows the store while it is the leader.

    Errors (the database going away, a position conflict) are logged; the runner
    backs off, gives up leadership, and starts over from the committed position.
    """

    def __init__(
        self,
        app: Any,
        projection: BatchedProjection[Any],
        coordinator: Coordinator,
        *,
        batch_size: int = 500,
    ):
        super().__init__(coordinator)
        self.app = app
        self.projection = projection
        self.batch_size = batch_size

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.projection.name

    def work_while_leader(self) -> None:
        self._follow()

    def _follow(self) -> None:
        view = self.projection.view
        position = view.max_tracking_id(self.app.name) or 0
        view.progress.advance(position)
        while not self._stop.is_set() and self.coordinator.still_leader():
            applied = apply_next_batch(self.app, self.projection, position, self.batch_size)
            position = applied.position
            if applied.notifications < self.batch_size:  # caught up: wait for news
                self.coordinator.wait_for_events(self._stop)
