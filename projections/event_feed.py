"""The org event index: every event of an org in global order (feed, live stream, export).

**Async** projection, like the task list: a runner applies events in batches, rows
and position in one transaction. **Rebuilt** by `tasktrail projections rebuild
event_feed` (tables dropped, every event replayed from position 0).

One row per event, keyed by its global position, holding the event as a feed entry
(the timeline entry of `domain.views.event_view` plus `position`, `task_id` and
`stream_id`) serialised once, as JSON, with times in RFC 3339 and ids as text.
A row says whether the whole event is about system work (`is_system`), so pages
for regular readers are filled in SQL; each stream's shape (which of its jobs and
steps are system ones) is kept once per task, for the finer redaction a reader
needs. API-key events go to the key's org with `task_id` null (without the token
hash). Idempotency records are not events of an org: they are skipped.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod

from domain.api_key import ApiKey
from domain.task import Task
from domain.views import event_view
from projections.batched import BatchedProjection
from projections.tracked_view import TrackedView

# Never shown in a feed: enough to check a guessed token offline.
HIDDEN_FIELDS = frozenset({"token_hash"})


@dataclass(frozen=True)
class Stream:
    """What the feed remembers of a task or API key: its org and which work is system work."""

    org: str
    shape: dict[str, Any]


@dataclass(frozen=True)
class FeedRow:
    position: int
    entry: str  # the JSON text of the feed entry
    shape: dict[str, Any] | None  # the stream's shape; None when system events were asked for


def task_shape(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan reduced to what redaction needs: keys and `system` flags."""
    return {
        "jobs": [
            {
                "key": job["key"],
                "system": bool(job.get("system")),
                "steps": [{"key": s["key"], "system": bool(s.get("system"))} for s in job["steps"]],
            }
            for job in jobs
        ]
    }


def about_system_work(data: dict[str, Any], shape: dict[str, Any]) -> bool:
    """Whether the event concerns a system job, or a system step, as a whole."""
    job = data.get("job")
    if job is None:
        return False
    for planned in shape["jobs"]:
        if planned["key"] == job:
            if planned["system"]:
                return True
            step = data.get("step")
            return any(s["key"] == step and s["system"] for s in planned["steps"])
    return False


def feed_entry(event: Any, position: int) -> dict[str, Any]:
    """The event as a feed entry (serialised by the view: times in RFC 3339, ids as text)."""
    entry = event_view(event)
    entry["data"] = {k: v for k, v in entry["data"].items() if k not in HIDDEN_FIELDS}
    entry["stream_id"] = event.originator_id
    if not isinstance(event, Task.Event):
        entry["task_id"] = None
    return {"position": position, **entry}


class OrgEventWriter(Protocol):
    """The commands one batch of events gives the event index."""

    def open_stream(self, stream_id: UUID, stream: Stream, first: dict[str, Any]) -> None: ...

    def stream(self, stream_id: UUID) -> Stream: ...

    def append(self, stream_id: UUID, entry: dict[str, Any], *, is_system: bool) -> None: ...


class OrgEventView(TrackedView):
    """The event index's tables, and the reads the API asks of them."""

    @abstractmethod
    def events(
        self,
        org: str,
        *,
        after: int = 0,
        until: int | None = None,
        limit: int = 100,
        task_id: UUID | None = None,
        type: str | None = None,
        include_system: bool = False,
    ) -> list[FeedRow]:
        """The org's events after position `after` (up to `until`), in global order."""


class EventFeedProjection(BatchedProjection[OrgEventView]):
    """Task and API-key events → one feed row each, in the org they belong to."""

    name = "event_feed"
    event_classes = (Task.Event, ApiKey.Event)

    @singledispatchmethod
    def apply(self, event: Any, position: int, batch: OrgEventWriter) -> None:
        """Any later event of a known stream."""
        entry = feed_entry(event, position)
        stream = batch.stream(event.originator_id)
        batch.append(
            event.originator_id, entry, is_system=about_system_work(entry["data"], stream.shape)
        )

    @apply.register(Task.TaskCreated)
    def _task_created(self, event: Any, position: int, batch: OrgEventWriter) -> None:
        stream = Stream(event.org, task_shape(event.jobs))
        batch.open_stream(event.originator_id, stream, feed_entry(event, position))

    @apply.register(ApiKey.ApiKeyIssued)
    def _key_issued(self, event: Any, position: int, batch: OrgEventWriter) -> None:
        stream = Stream(event.org, {"jobs": []})
        batch.open_stream(event.originator_id, stream, feed_entry(event, position))
