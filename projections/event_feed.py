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
from domain.chain import ENVELOPE, to_json_value
from domain.task import Task
from projections.batched import BatchedProjection, EventRecord
from projections.decoding import is_encoded
from projections.tracked_view import TrackedView

# Never shown in a feed: enough to check a guessed token offline.
HIDDEN_FIELDS = frozenset({"token_hash"})
NOT_DATA = ENVELOPE | HIDDEN_FIELDS
_PLAIN = frozenset({str, int, float, bool, type(None)})


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


def feed_entry(event: EventRecord, position: int) -> dict[str, Any]:
    """The event as a feed entry: its timeline entry (`domain.views.event_view`) with
    `position` and `stream_id`, made from its stored state without decoding it whole.

    `data` takes the JSON form a timeline shows (`domain.chain.to_json_value`); the
    times of the entry itself stay times, serialised by the view as the API does. The
    entry takes the record's state over: what is left of it is `data`.
    """
    data = event.state
    recorded_at = _time(event, data.pop("timestamp"))
    occurred_at = data.pop("occurred_at", None)
    entry = {
        "position": position,
        "task_id": event.originator_id if issubclass(event.event_class, Task.Event) else None,
        "version": event.originator_version,
        "type": event.event_class.__name__,
        "recorded_at": recorded_at,
        "occurred_at": _time(event, occurred_at) if occurred_at else recorded_at,
        "actor": event.decoded(data.pop("actor", None)),
        "request_id": data.pop("request_id", None),
        "data": data,
        "prev_hash": data.pop("prev_hash", None),
        "hash": data.pop("hash", None),
        "redacted": False,
        "stream_id": event.originator_id,
    }
    for key in NOT_DATA.intersection(data):
        del data[key]
    for key, value in data.items():
        if type(value) is dict or type(value) is list:
            data[key] = _json_value(event, value)
    return entry


def _json_value(event: EventRecord, value: Any) -> Any:
    """`to_json_value` of a state value, decoding only what is not plain JSON already."""
    kind = type(value)
    if kind is dict:
        if is_encoded(value):
            if value["_type_"] == "datetime_iso" and value["_data_"].endswith("+00:00"):
                return value["_data_"][:-6] + "Z"  # RFC 3339 in UTC, without parsing it
            return to_json_value(event.decoded(value))
        return {k: v if type(v) in _PLAIN else _json_value(event, v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _PLAIN else _json_value(event, v) for v in value]
    if kind in _PLAIN:
        return value
    return to_json_value(value)  # decoded already


def _time(event: EventRecord, value: Any) -> Any:
    """A time of the entry as the view serialises it: `...Z` text, or the decoded time."""
    if type(value) is dict and value.get("_type_") == "datetime_iso":
        text = value["_data_"]
        if text.endswith("+00:00"):
            return text[:-6] + "Z"
    return event.decoded(value)


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
    def apply(self, event: EventRecord, position: int, batch: OrgEventWriter) -> None:
        """Any later event of a known stream."""
        entry = feed_entry(event, position)
        stream = batch.stream(event.originator_id)
        batch.append(
            event.originator_id, entry, is_system=about_system_work(entry["data"], stream.shape)
        )

    @apply.register(Task.TaskCreated)
    def _task_created(self, event: EventRecord, position: int, batch: OrgEventWriter) -> None:
        entry = feed_entry(event, position)
        stream = Stream(event.state["org"], task_shape(entry["data"]["jobs"]))
        batch.open_stream(event.originator_id, stream, entry)

    @apply.register(ApiKey.ApiKeyIssued)
    def _key_issued(self, event: EventRecord, position: int, batch: OrgEventWriter) -> None:
        stream = Stream(event.state["org"], {"jobs": []})
        batch.open_stream(event.originator_id, stream, feed_entry(event, position))
