"""The log of one step: text chunks as events in a stream of its own, apart from the task.

A step's log can grow to megabytes while its task stream stays a few dozen events:
keeping the two apart means loading a task never reads a byte of log. Appending
must not read the log either, so every event carries the log's running totals, and
`StepLog` (what an append needs to know) is built from the last event alone.

Over the per-step cap nothing is dropped silently: the part that fits is kept and
`LogTruncated` records how many bytes were refused, in the same write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from domain.errors import ConflictError, FieldProblem, InvalidRequestError
from domain.stamped import StampedEvent


def log_stream_id(task_id: UUID, job: str, step: str) -> UUID:
    """The stream of one step's log: derived, so a writer needs no lookup to find it."""
    # Keys are slugs ([a-z0-9_.-]): "/" cannot occur in them, so no two steps collide.
    return uuid5(task_id, f"{job}/{step}")


class LogEvent(StampedEvent):
    """An event of a step's log: who caused it, which step, and the totals after it."""

    task_id: UUID
    job: str
    step: str
    # The log's running totals after this event, so the last event alone says where
    # the log stands (appends and the task's per-step totals read nothing else).
    chunks: int
    total_bytes: int
    refused_bytes: int
    occurred_at: datetime


class LogChunkAppended(LogEvent):
    """A chunk of text was appended to the step's log; `size` is its length in UTF-8 bytes."""

    text: str
    size: int


class LogTruncated(LogEvent):
    """The step's log reached its cap: `refused` bytes of one append were not stored."""

    refused: int
    cap_bytes: int


@dataclass(frozen=True)
class LoggedStep:
    """What the task ledger says about a step, as far as its log cares.

    `has_run` is whether the step ever started, in any attempt: a job that backed off
    put its steps back to `pending`, but the logs of the attempt that ran still arrive.
    """

    task_id: UUID
    job: str
    step: str
    status: str
    has_run: bool

    @property
    def stream_id(self) -> UUID:
        return log_stream_id(self.task_id, self.job, self.step)


@dataclass(frozen=True)
class LogTotals:
    """Where a log stands: its seq (the last event's version), chunks, bytes kept and refused."""

    seq: int = 0
    chunks: int = 0
    bytes: int = 0
    refused_bytes: int = 0

    @classmethod
    def after(cls, event: LogEvent | None) -> LogTotals:
        """The totals the log's last event records (nothing yet: zeros)."""
        if event is None:
            return cls()
        return cls(event.originator_version, event.chunks, event.total_bytes, event.refused_bytes)


class StepLog:
    """Where one step's log stands: the next version, and its totals.

    Not replayed from the stream: it starts from the totals its last event carries,
    so an append costs one read (or none, see `StepLogs`) however long the log is.
    Commands check the rules and decide every value; `_apply` only assigns.
    """

    def __init__(self, target: LoggedStep, totals: LogTotals):
        self.target = target
        self.id = target.stream_id
        self.version = totals.seq
        self.chunks = totals.chunks
        self.bytes = totals.bytes
        self.refused_bytes = totals.refused_bytes
        self._pending: list[LogEvent] = []

    @classmethod
    def following(cls, target: LoggedStep, last: LogEvent | None) -> StepLog:
        """The log as its last stored event left it (empty when there is none)."""
        return cls(target, LogTotals.after(last))

    @property
    def totals(self) -> LogTotals:
        return LogTotals(self.version, self.chunks, self.bytes, self.refused_bytes)

    # ------------------------------------------------------------------ commands

    def append(self, text: str, *, cap_bytes: int, now: datetime) -> None:
        """Appends a chunk; past the cap, keeps what fits and records the rest as refused."""
        if not self.target.has_run:
            raise ConflictError(
                f"step {self.target.step} of job {self.target.job} has not started: "
                "its log opens when it runs",
                current_status=self.target.status,
            )
        if not text:
            raise InvalidRequestError([FieldProblem((), "a log chunk must not be empty")])
        if "\x00" in text:
            raise InvalidRequestError([FieldProblem((), "NUL characters are not allowed")])
        encoded = text.encode("utf-8")
        room = max(0, cap_bytes - self.bytes)
        kept = encoded if len(encoded) <= room else encoded[:room]
        # A cut inside a character drops its first bytes too: what is kept stays text.
        kept_text = kept.decode("utf-8", "ignore")
        kept_size = len(kept_text.encode("utf-8"))
        if kept_size:
            self._trigger(
                LogChunkAppended,
                text=kept_text,
                size=kept_size,
                chunks=self.chunks + 1,
                total_bytes=self.bytes + kept_size,
                refused_bytes=self.refused_bytes,
                occurred_at=now,
            )
        if kept_size < len(encoded):
            refused = len(encoded) - kept_size
            self._trigger(
                LogTruncated,
                refused=refused,
                cap_bytes=cap_bytes,
                chunks=self.chunks,
                total_bytes=self.bytes,
                refused_bytes=self.refused_bytes + refused,
                occurred_at=now,
            )

    def collect_events(self) -> list[LogEvent]:
        pending, self._pending = self._pending, []
        return pending

    # ------------------------------------------------------------------ events

    def _trigger(self, event_class: type[LogEvent], **fields: Any) -> None:
        event = event_class(  # type: ignore[call-arg]
            originator_id=self.id,
            originator_version=self.version + 1,
            timestamp=event_class.create_timestamp(),
            task_id=self.target.task_id,
            job=self.target.job,
            step=self.target.step,
            **fields,
        )
        self._apply(event)
        self._pending.append(event)

    def _apply(self, event: LogEvent) -> None:
        self.version = event.originator_version
        self.chunks = event.chunks
        self.bytes = event.total_bytes
        self.refused_bytes = event.refused_bytes
