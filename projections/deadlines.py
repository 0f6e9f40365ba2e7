"""The deadline index: each running task's hard-timeout deadline, soonest first.

**Async** projection, like the task list: a runner applies events in batches, rows
and position in one transaction. **Rebuilt** by `tasktrail projections rebuild
deadlines` (tables dropped, every event replayed from position 0).

One row per executable task that has a timeout: `timeout_seconds` from its
creation, and `deadline` (`started_at + timeout_seconds`) once `JobStarted` carries
the task's start. The row goes when the task finishes (`TaskFinished`, whatever the
terminal status), so the index holds only tasks whose timeout is still running (or
not yet started). `due(now)` is what the timeout enforcer asks every few hundred ms.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import datetime
from typing import Protocol
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod

from domain.task import Task
from projections.batched import BatchedProjection, EventRecord
from projections.tracked_view import TrackedView


class DeadlineWriter(Protocol):
    """The commands one batch of events gives the deadline index."""

    def add(self, task_id: UUID, timeout_seconds: int) -> None: ...

    def start(self, task_id: UUID, started_at: datetime) -> None: ...

    def remove(self, task_id: UUID) -> None: ...


class DeadlineView(TrackedView):
    """The deadline index's table, and the query the timeout enforcer asks of it."""

    @abstractmethod
    def due(self, now: datetime, limit: int = 100) -> list[UUID]:
        """Tasks whose deadline is at or before `now`, soonest first (at most `limit`)."""

    @abstractmethod
    def deadline(self, task_id: UUID) -> datetime | None:
        """The task's deadline, if it is indexed and started."""


class DeadlineProjection(BatchedProjection[DeadlineView]):
    """Creation, start and finish of tasks → their deadline rows; other events are skipped."""

    name = "deadlines"
    event_classes = (
        Task.TaskCreated,
        Task.JobStarted,  # type: ignore[attr-defined]
        Task.TaskFinished,  # type: ignore[attr-defined]
    )
    # A finish removes the row whatever it says.
    counted_classes = (Task.TaskFinished,)  # type: ignore[attr-defined]

    @singledispatchmethod
    def apply(self, event: EventRecord, position: int, batch: DeadlineWriter) -> None:
        """Events that do not move a deadline."""

    @apply.register(Task.TaskCreated)
    def _created(self, event: EventRecord, position: int, batch: DeadlineWriter) -> None:
        timeout_seconds = event.value("timeout_seconds")
        if timeout_seconds is not None:
            batch.add(event.originator_id, timeout_seconds)

    @apply.register(Task.JobStarted)  # type: ignore[attr-defined]
    def _job_started(self, event: EventRecord, position: int, batch: DeadlineWriter) -> None:
        started_at = event.value("task_started_at")
        if started_at is not None:
            batch.start(event.originator_id, started_at)

    @apply.register(Task.TaskFinished)  # type: ignore[attr-defined]
    def _finished(self, event: EventRecord, position: int, batch: DeadlineWriter) -> None:
        batch.remove(event.originator_id)
