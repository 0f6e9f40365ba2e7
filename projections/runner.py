"""Runners: follow the event store and apply a projection's events, a batch at a time.

A batch is up to `batch_size` notifications read with the library's
`select_notifications`, read as records by the projection (`projections.batched`),
applied, and recorded with one tracking record (the batch's last notification id)
in the same transaction. A runner that crashes resumes from the last committed
batch: nothing applied twice, nothing missed. Notification ids have gaps (a rolled
back insert consumes its sequence values): a runner never expects contiguity, only
order.

Every notification moves the position, also those the projection ignores (an
idempotency record, say), so `min_position` of any write is reached.

A live runner applies what is new, a small batch at a time. Catching up (a rebuild)
reads the next batch while it writes this one.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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


@dataclass(frozen=True)
class Batch:
    """Notifications read after a position, and the events of them the projection applies."""

    after: int
    notifications: int
    last: int
    events: list[tuple[Any, int]]


def read_batch(
    app: Any,
    projection: BatchedProjection[Any],
    position: int,
    batch_size: int,
    *,
    until: int | None = None,
) -> Batch:
    """Reads the notifications after `position` (up to `until`), decoded for the projection."""
    # No upper bound in the query: with one, PostgreSQL can plan a sort of every
    # notification after `position` (whatever the limit), per batch. The few read
    # beyond `until` are left out here.
    notifications = app.recorder.select_notifications(
        start=position, limit=batch_size, inclusive_of_start=False
    )
    if until is not None and notifications and notifications[-1].id > until:
        notifications = [n for n in notifications if n.id <= until]
    if not notifications:
        return Batch(position, 0, position, [])
    events = projection.events(notifications, app.mapper)
    return Batch(position, len(notifications), notifications[-1].id, events)


def apply_batch(app: Any, projection: BatchedProjection[Any], batch: Batch) -> Applied:
    """Applies a batch read from `batch.after`, with its position, in one transaction."""
    if batch.notifications:
        tracking = Tracking(app.name, batch.last)
        projection.process_batch(batch.events, tracking=tracking, expected=batch.after)
    return Applied(batch.notifications, batch.last)


def apply_next_batch(
    app: Any,
    projection: BatchedProjection[Any],
    position: int,
    batch_size: int,
    *,
    until: int | None = None,
) -> Applied:
    """Reads the notifications after `position` (up to `until`) and applies them as one batch."""
    return apply_batch(
        app, projection, read_batch(app, projection, position, batch_size, until=until)
    )


def catch_up(
    app: Any,
    projection: BatchedProjection[Any],
    *,
    until: int | None = None,
    batch_size: int = 500,
    on_batch: BatchCallback | None = None,
) -> int:
    """Applies every event up to `until` (default: the store's head now); the position reached.

    After a rebuild's `reset()`, the view's indexes are created at the end.
    """
    head = (app.recorder.max_notification_id() or 0) if until is None else until
    position = projection.view.max_tracking_id(app.name) or 0
    if position < head:
        position = _apply_up_to(app, projection, position, head, batch_size, on_batch)
    if projection.view.indexes_deferred:
        projection.view.create_indexes()
    return position


def _apply_up_to(
    app: Any,
    projection: BatchedProjection[Any],
    position: int,
    head: int,
    batch_size: int,
    on_batch: BatchCallback | None,
) -> int:
    """Applies batches from `position` to `head`, reading each next batch (in a second
    thread) while this one is written: the database works on one while Python works
    on the other. Batches still commit in order, each expecting the position the one
    before reached."""

    def read(after: int) -> Batch:
        return read_batch(app, projection, after, batch_size, until=head)

    with (
        _collector_paused(),
        ThreadPoolExecutor(1, thread_name_prefix=f"{projection.name}-read") as reader,
    ):
        ahead = reader.submit(read, position)
        while position < head:
            batch = ahead.result()
            if batch.notifications == 0:
                break
            if batch.last < head:
                ahead = reader.submit(read, batch.last)
            position = apply_batch(app, projection, batch).position
            if on_batch is not None:
                on_batch(position, batch.notifications)
    return position


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector, off for a while.

    Catching up allocates millions of short-lived objects (parsed events, rows) that
    reference counting frees; the collector's passes over each batch's live ones
    cost about a sixth of the client's time, and find nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
        view.create_indexes()  # missing if a rebuild stopped half-way
        position = view.max_tracking_id(self.app.name) or 0
        view.progress.advance(position)
        while not self._stop.is_set() and self.coordinator.still_leader():
            applied = apply_next_batch(self.app, self.projection, position, self.batch_size)
            position = applied.position
            if applied.notifications < self.batch_size:  # caught up: wait for news
                self.coordinator.wait_for_events(self._stop)
