"""The task list: the activity feed, its filters, and origin chains and trees.

**Async** projection: a runner follows the event store and applies events in
batches (rows and position in one transaction), normally within milliseconds of
the write; reads that must see a write pass `min_position`. **Rebuilt** by
`tasktrail projections rebuild task_list`: the tables are dropped and every event
is replayed from position 0.

One row per task holds every field of a task summary (the task without its jobs),
the task's version and latest position, and `events_applied`: how many events
were applied to the row. Exactly-once means `events_applied == version` for every
task, always. Labels have a table of their own for `label=key:value` filters. The
same table answers origin chains (up the `origin_task_id` links) and the trees of
caused tasks (down them).
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod

from domain.status import Status
from domain.task import IMMEDIATE, Task
from domain.views import duration_seconds
from projections.batched import BatchedProjection, EventRecord
from projections.tracked_view import TrackedView

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# Columns kept for filters and exactly-once checks, not part of a summary.
INTERNAL_COLUMNS = ("author_id", "author_kind", "events_applied")


class InvalidCursorError(ValueError):
    """Raised when a `cursor` is not one this service handed out."""


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last task's `created_at` and id (the newest-first keyset)."""

    created_at: datetime
    id: UUID

    def encode(self) -> str:
        raw = json.dumps(["v1", self.created_at.isoformat(), str(self.id)]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            version, created_at, task_id = json.loads(raw)
            if version != "v1":
                raise ValueError(version)
            moment = datetime.fromisoformat(created_at)
            if moment.tzinfo is None:
                raise ValueError(created_at)
            return cls(moment, UUID(task_id))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as error:
            raise InvalidCursorError("not a cursor from this list") from error


@dataclass(frozen=True)
class TaskQuery:
    """One page of the activity feed of one org; every filter is optional."""

    org: str
    project: str | None = None
    statuses: tuple[str, ...] = ()
    type: str | None = None
    kind: str | None = None
    author_id: str | None = None
    author_kind: str | None = None
    origin_task_id: UUID | None = None
    rerun_of: UUID | None = None
    labels: tuple[tuple[str, str], ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    include_silent: bool = False
    limit: int = DEFAULT_LIMIT
    after: Cursor | None = None


@dataclass(frozen=True)
class TaskPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def summary(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A task summary (as the contract has it) from a row; the duration runs until `now`."""
    shown = {k: v for k, v in row.items() if k not in INTERNAL_COLUMNS}
    shown["duration_seconds"] = (
        None
        if row["kind"] == IMMEDIATE
        else duration_seconds(row["started_at"], row["finished_at"], now)
    )
    return shown


class TaskListWriter(Protocol):
    """The commands one batch of events gives the task list (see `TaskListProjection`)."""

    def add_task(self, row: dict[str, Any], labels: dict[str, str]) -> None: ...

    def update(self, task_id: UUID, version: int, position: int, **changes: Any) -> None: ...

    def add_rerun(self, task_id: UUID, version: int, position: int, rerun: UUID) -> None: ...


class TaskListView(TrackedView):
    """The task list's tables, and the queries the API asks of them."""

    @abstractmethod
    def list_tasks(self, query: TaskQuery) -> TaskPage:
        """Newest first (`created_at` desc, then id desc), one page after `query.after`."""

    @abstractmethod
    def get(self, task_id: UUID, org: str | None) -> dict[str, Any] | None:
        """The task's row, if it is a task of `org` (None: of any org)."""

    @abstractmethod
    def origin_chain(self, task_id: UUID, org: str) -> list[dict[str, Any]]:
        """From the root task down to this one (empty when the task is not in `org`)."""

    @abstractmethod
    def caused(self, task_id: UUID, org: str, *, all_levels: bool) -> list[dict[str, Any]]:
        """Tasks whose origin is this one (and, with `all_levels`, theirs, and so on)."""


class TaskListProjection(BatchedProjection[TaskListView]):
    """Task events → task list rows; every other event only moves the position."""

    name = "task_list"
    event_classes = (Task.Event,)
    # Events that change no summary field: counted, never parsed.
    counted_classes = (
        Task.JobQueued,  # type: ignore[attr-defined]
        Task.StepStarted,  # type: ignore[attr-defined]
        Task.StepFinished,  # type: ignore[attr-defined]
        Task.JobBackedOff,  # type: ignore[attr-defined]
        Task.JobFinished,  # type: ignore[attr-defined]
        Task.TaskTimedOut,  # type: ignore[attr-defined]
    )

    @singledispatchmethod
    def apply(self, event: EventRecord, position: int, batch: TaskListWriter) -> None:
        """A task event that changes no summary field: the row still counts it."""
        batch.update(event.originator_id, event.originator_version, position)

    @apply.register(Task.TaskCreated)
    def _created(self, event: EventRecord, position: int, batch: TaskListWriter) -> None:
        value = event.value
        immediate = value("kind") == IMMEDIATE
        author = dict(value("author"))
        labels = dict(value("labels"))
        created_at = value("occurred_at")
        row = {
            "id": event.originator_id,
            "org": value("org"),
            "type": value("type"),
            "title": value("title"),
            "kind": value("kind"),
            "status": (Status.DONE if immediate else Status.PENDING).value,
            "author": author,
            "author_id": str(author.get("id", "")),
            "author_kind": str(author.get("kind", "")),
            "project": value("project"),
            "origin_task_id": value("origin_task_id"),
            "rerun_of": value("rerun_of"),
            "reruns": [],
            "forced": value("forced"),
            "silent": value("silent"),
            "rerunnable": value("rerunnable"),
            "timeout_seconds": value("timeout_seconds"),
            "labels": labels,
            "cancel_requested": False,
            "created_at": created_at,
            "queued_at": None,
            "started_at": None,
            "finished_at": created_at if immediate else None,
            "failure": None,
            "version": event.originator_version,
            "position": position,
            "events_applied": 1,
        }
        batch.add_task(row, dict(labels))

    @apply.register(Task.TaskQueued)  # type: ignore[attr-defined]
    def _queued(self, event: EventRecord, position: int, batch: TaskListWriter) -> None:
        batch.update(
            event.originator_id,
            event.originator_version,
            position,
            queued_at=event.value("queued_at"),
            status=Status.QUEUED.value,
        )

    @apply.register(Task.JobStarted)  # type: ignore[attr-defined]
    def _job_started(self, event: EventRecord, position: int, batch: TaskListWriter) -> None:
        task_started_at = event.value("task_started_at")
        started = {"started_at": task_started_at} if task_started_at else {}
        batch.update(event.originator_id, event.originator_version, position, **started)

    @apply.register(Task.TaskStatusChanged)  # type: ignore[attr-defined]
    def _status_changed(self, event: EventRecord, position: int, batch: TaskListWriter) -> None:
        status = event.value("status")
        batch.update(event.originator_id, event.originator_version, position, status=status)

    @apply.register(Task.TaskFinished)  # type: ignore[attr-defined]
    def _finished(self, event: EventRecord, position: int, batch: TaskListWriter) -> None:
        batch.update(
            event.originator_id,
            event.originator_version,
            position,
            status=event.value("status"),
            failure=event.value("failure"),
            finished_at=event.value("finished_at"),
        )

    @apply.register(Task.TaskCancelRequested)  # type: ignore[attr-defined]
    def _cancel_requested(self, event: EventRecord, position: int, batch: TaskListWriter) -> None:
        batch.update(event.originator_id, event.originator_version, position, cancel_requested=True)

    @apply.register(Task.TaskRerun)  # type: ignore[attr-defined]
    def _rerun(self, event: EventRecord, position: int, batch: TaskListWriter) -> None:
        batch.add_rerun(
            event.originator_id, event.originator_version, position, event.value("rerun_task_id")
        )
