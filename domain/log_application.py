"""Step logs: the application service whose methods append to and read steps' logs.

A separate application, so log streams live in a table (on SQLite, a file) of their
own: megabytes of logs never slow down loading a task, its projections or the feed.
It knows nothing of tasks beyond what the caller passes in (`LoggedStep`): the API
reads the step from the task ledger, strongly consistently, and hands over its facts.

Appends write the ledger's way (`domain.resilient_writes`): read the log's last
event (never the whole stream; not even that when this process wrote it last),
decide, save with optimistic concurrency, retry a lost race after a back-off
(re-reading the store), and recognise our own commit after a lost acknowledgement
by the command id every event carries. A keyed request's answer is saved in the
same write as its chunk, in this store: a retry finds the answer and stores nothing
twice. Appends arriving together share one transaction (`domain.group_commit`).

Reads page through the store a bounded number of events at a time, so a whole log
can be streamed out in constant memory however large it is.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.application_errors import ContentionError
from domain.context import command_scope
from domain.group_commit import DEFAULT_MAX_GROUP_EVENTS, DEFAULT_MAX_WAIT_SECONDS
from domain.idempotency import IdempotentRequest
from domain.logs import (
    LogChunkAppended,
    LogEvent,
    LoggedStep,
    LogTotals,
    LogTruncated,
    StepLog,
    log_stream_id,
)
from domain.resilient_writes import Clock, ResilientApplication, reading, utc_now

DEFAULT_MAX_BYTES_PER_STEP = 64 * 1024 * 1024
# Reads fetch about this many bytes of log at a time, and never more than
# MAX_READ_BATCH events (at most 64 MiB, were every chunk 1 MiB but the first ones).
READ_BUDGET_BYTES = 1024 * 1024
MAX_READ_BATCH = 64
FIRST_READ_BATCH = 4
# Heads (totals) of the logs this process appended to last, kept to skip a read.
HEAD_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Appended:
    """What an append stored: the log's seq after it, the bytes kept and refused, where."""

    seq: int
    size: int
    refused_bytes: int
    # The global position (in the log store) of the last event stored; None for a
    # replayed answer, whose position the caller looks up from its stored record.
    position: int | None
    replayed: bool = False


@dataclass(frozen=True)
class LogChunk:
    seq: int
    text: str
    size: int
    recorded_at: datetime


@dataclass(frozen=True)
class Truncation:
    seq: int
    refused_bytes: int
    cap_bytes: int
    recorded_at: datetime


@dataclass(frozen=True)
class LogPage:
    """Chunks (and truncation marks) after a seq; `next_after` resumes after them."""

    chunks: list[LogChunk]
    truncations: list[Truncation]
    next_after: int
    # Whether the page stopped at its limit with more of the log after it.
    more: bool = False


class HeadCache:
    """The totals of recently appended logs, least recently used out first (thread-safe)."""

    def __init__(self, size: int):
        self.size = size
        self._heads: OrderedDict[UUID, LogTotals] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, stream_id: UUID) -> LogTotals | None:
        with self._lock:
            head = self._heads.get(stream_id)
            if head is not None:
                self._heads.move_to_end(stream_id)
            return head

    def put(self, stream_id: UUID, totals: LogTotals) -> None:
        with self._lock:
            self._heads[stream_id] = totals
            self._heads.move_to_end(stream_id)
            while len(self._heads) > self.size:
                self._heads.popitem(last=False)

    def pop(self, stream_id: UUID) -> None:
        with self._lock:
            self._heads.pop(stream_id, None)


class StepLogs(ResilientApplication):
    """Every step's log, one stream per step, in a store of their own."""

    name = "StepLogs"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock = utc_now,
        max_bytes_per_step: int = DEFAULT_MAX_BYTES_PER_STEP,
        group_commit_max_events: int = DEFAULT_MAX_GROUP_EVENTS,
        group_commit_max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    ) -> None:
        self.max_bytes_per_step = max_bytes_per_step
        self._heads = HeadCache(HEAD_CACHE_SIZE)
        super().__init__(
            env,
            clock,
            group_commit_max_events=group_commit_max_events,
            group_commit_max_wait_seconds=group_commit_max_wait_seconds,
        )

    # ------------------------------------------------------------------ commands

    def append(
        self, target: LoggedStep, text: str, *, request: IdempotentRequest | None = None
    ) -> Appended:
        """Appends a chunk to the step's log (refused if the step never ran).

        A retry of a keyed request that was stored gets its first answer back,
        and stores nothing.
        """
        with command_scope() as command_id:
            for attempt in range(self.max_attempts):
                # A stored answer makes the first save fail (its stream exists), so only a
                # retry looks for it: callers have usually checked for it already.
                if attempt > 0 and request is not None and (replay := self.replay(request)):
                    return replay
                # The first attempt trusts the head this process last wrote; a stale one
                # (another process appended since) only costs a conflict and a re-read.
                head = self._heads.get(target.stream_id) if attempt == 0 else None
                log = StepLog(target, head or self._totals(target.stream_id))
                loaded = (log.version, log.bytes, log.refused_bytes)
                log.append(text, cap_bytes=self.max_bytes_per_step, now=self.clock())
                events = log.collect_events()
                answer = self._answer(request, log)
                stored = Appended(
                    seq=log.version,
                    size=log.bytes - loaded[1],
                    refused_bytes=log.refused_bytes - loaded[2],
                    position=None,
                )
                # The head is unknown until the store acknowledges this write.
                self._heads.pop(log.id)
                saved = self._save_as_command(log.id, loaded[0], command_id, *events, answer)
                if saved is None:
                    self._back_off(attempt)  # another append (or this key) won: reload
                    continue
                if saved.acknowledged:
                    self._heads.put(log.id, log.totals)
                return _with_position(stored, saved.position)
        raise ContentionError(
            f"the log of step {target.step} of job {target.job} kept changing; try again"
        )

    # ------------------------------------------------------------------ queries

    def totals(self, task_id: UUID, job: str, step: str) -> LogTotals:
        """The log's totals, from its last event alone (one read, whatever its length)."""
        return self._totals(log_stream_id(task_id, job, step))

    def page(
        self,
        task_id: UUID,
        job: str,
        step: str,
        *,
        after: int = 0,
        limit: int = 100,
        max_bytes: int = READ_BUDGET_BYTES,
    ) -> LogPage:
        """At most `limit` chunks after seq `after`, and about `max_bytes` of text (≥ 1 chunk)."""
        chunks: list[LogChunk] = []
        truncations: list[Truncation] = []
        size = 0
        next_after = after
        stream_id = log_stream_id(task_id, job, step)
        for event in self._events(stream_id, after=after):
            if len(chunks) >= limit or (chunks and size >= max_bytes):
                return LogPage(chunks, truncations, next_after, more=True)
            if isinstance(event, LogChunkAppended):
                chunks.append(
                    LogChunk(event.originator_version, event.text, event.size, event.timestamp)
                )
                size += event.size
            elif isinstance(event, LogTruncated):
                truncations.append(
                    Truncation(
                        event.originator_version, event.refused, event.cap_bytes, event.timestamp
                    )
                )
            next_after = event.originator_version
        return LogPage(chunks, truncations, next_after)

    def text(
        self, task_id: UUID, job: str, step: str, *, after: int = 0
    ) -> tuple[LogTotals, Iterator[str]]:
        """The log's text (after seq `after`) as it stands now, read a bounded batch at a time.

        It ends at the seq the log had when asked: a download is one consistent
        snapshot, `totals.bytes` long when it starts at the beginning.
        """
        totals = self.totals(task_id, job, step)
        stream_id = log_stream_id(task_id, job, step)
        average = totals.bytes // totals.chunks if totals.chunks else None

        def chunks() -> Iterator[str]:
            for event in self._events(stream_id, after=after, upto=totals.seq, average=average):
                if isinstance(event, LogChunkAppended):
                    yield event.text

        return totals, chunks()

    def replay(self, request: IdempotentRequest) -> Appended | None:
        """The first answer to a keyed append, rebuilt from what it stored; None if new."""
        answer = self.find_answer(request.answer_id)
        if answer is None or answer.subject_id is None or answer.subject_version is None:
            return None
        with reading():
            recorded: Any = next(iter(self.events.get(answer.id, limit=1)))
            seq = answer.subject_version
            # An append stores one or two events (a chunk, a truncation mark), in one write.
            events: list[Any] = list(
                self.events.get(answer.subject_id, gt=max(0, seq - 2), lte=seq)
            )
        own = [e for e in events if e.command_id == recorded.command_id]
        return Appended(
            seq=seq,
            size=sum(e.size for e in own if isinstance(e, LogChunkAppended)),
            refused_bytes=sum(e.refused for e in own if isinstance(e, LogTruncated)),
            position=None,
            replayed=True,
        )

    # ------------------------------------------------------------------ plumbing

    def _totals(self, stream_id: UUID) -> LogTotals:
        """Read from the store: always current, whichever process appended last."""
        return LogTotals.after(self._last_event(stream_id))

    def _last_event(self, stream_id: UUID) -> LogEvent | None:
        with reading():
            last: Any = next(iter(self.events.get(stream_id, desc=True, limit=1)), None)
        return last

    def _events(
        self,
        stream_id: UUID,
        *,
        after: int,
        upto: int | None = None,
        average: int | None = None,
    ) -> Iterator[LogEvent]:
        """The stream's events after `after`, fetched a bounded batch at a time.

        Each batch is sized from the chunks' average size (given, or seen so far) to
        hold about READ_BUDGET_BYTES. No connection is held between batches: a slow
        reader of a huge log holds a batch of it, never the store.
        """
        batch = _batch_for(average) if average else FIRST_READ_BATCH
        while upto is None or after < upto:
            with reading():
                # The query runs here; each event is decoded only when it is reached.
                events: Iterator[Any] = self.events.get(
                    stream_id, gt=after or None, lte=upto, limit=batch
                )
            count = size = 0
            for event in events:
                count, size, after = (
                    count + 1,
                    size + getattr(event, "size", 0),
                    event.originator_version,
                )
                yield event
            if count < batch:
                return
            batch = _batch_for(size // count)


def _batch_for(average_size: int) -> int:
    return max(1, min(MAX_READ_BATCH, READ_BUDGET_BYTES // max(1, average_size)))


def _with_position(appended: Appended, position: int) -> Appended:
    return Appended(appended.seq, appended.size, appended.refused_bytes, position)
