"""Step logs: the application service whose methods append to and read steps' logs.

A separate application, so log streams live in a table (on SQLite, a file) of their
own: megabytes of logs never slow down loading a task, its projections or the feed.
It knows nothing of tasks beyond what the caller passes in (`LoggedStep`): the API
reads the step from the task ledger, strongly consistently, and hands over its facts.

Appends follow the ledger's way of writing: read the log's last event (never the
whole stream; not even that when this process wrote it last), decide, save with
optimistic concurrency, retry a lost race after a back-off (re-reading the store),
and recognise our own commit after a lost acknowledgement by the command id every
event carries. A keyed request's answer is saved in the same write as its
chunk, in this store: a retry finds the answer and stores nothing twice.

Reads page through the store a bounded number of events at a time, so a whole log
can be streamed out in constant memory however large it is.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Transcoder

from domain.application import (
    Clock,
    ContentionError,
    StoreUnavailableError,
    WriteOutcomeUnknownError,
    utc_now,
)
from domain.context import command_scope
from domain.idempotency import IdempotentAnswer, IdempotentRequest
from domain.logs import (
    LogChunkAppended,
    LogEvent,
    LoggedStep,
    LogTotals,
    LogTruncated,
    StepLog,
    log_stream_id,
)
from domain.storage import STORE_ERRORS
from domain.transcodings import EscapingJSONTranscoder

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


class StepLogs(Application[UUID]):
    """Every step's log, one stream per step, in a store of their own."""

    name = "StepLogs"
    max_attempts = 60
    backoff_base = 0.01
    backoff_cap = 0.2

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock = utc_now,
        max_bytes_per_step: int = DEFAULT_MAX_BYTES_PER_STEP,
    ) -> None:
        self.clock = clock
        self.max_bytes_per_step = max_bytes_per_step
        self.conflicts_retried = 0
        self._conflicts_lock = threading.Lock()
        self._heads = HeadCache(HEAD_CACHE_SIZE)
        try:
            super().__init__(env)
        except STORE_ERRORS as error:
            if (factory := getattr(self, "factory", None)) is not None:
                factory.close()
            raise StoreUnavailableError(f"the event store cannot be reached: {error}") from error

    def construct_transcoder(self) -> Transcoder:
        """The ledger's transcoder: actors are caller-supplied mappings here too."""
        transcoder = EscapingJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

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
                if request is not None and (replay := self.replay(request)) is not None:
                    return replay
                # The first attempt trusts the head this process last wrote; a stale one
                # (another process appended since) only costs a conflict and a re-read.
                head = self._heads.get(target.stream_id) if attempt == 0 else None
                log = StepLog(target, head or self._totals(target.stream_id))
                loaded = (log.version, log.bytes, log.refused_bytes)
                log.append(text, cap_bytes=self.max_bytes_per_step, now=self.clock())
                events = log.collect_events()
                answer = None
                if request is not None:
                    answer = IdempotentAnswer.record(
                        request, now=self.clock(), subject_id=log.id, subject_version=log.version
                    )
                stored = Appended(
                    seq=log.version,
                    size=log.bytes - loaded[1],
                    refused_bytes=log.refused_bytes - loaded[2],
                    position=None,
                )
                try:
                    recordings = self.save(*events, answer)
                except IntegrityError:
                    self._heads.pop(log.id)
                    if self._has_own_events(log.id, loaded[0], command_id):
                        # Our commit, its acknowledgement lost (the store's maximum
                        # position is an upper bound of its own).
                        return _with_position(stored, self._max_position())
                    self._back_off(attempt)  # another append (or this key) won: reload
                    continue
                except STORE_ERRORS as error:
                    self._heads.pop(log.id)
                    if self._has_own_events(log.id, loaded[0], command_id):
                        # The recording (so the exact position) was lost with the
                        # acknowledgement: the store's maximum is an upper bound.
                        return _with_position(stored, self._max_position())
                    raise StoreUnavailableError(str(error)) from error
                self._heads.put(log.id, log.totals)
                return _with_position(stored, recordings[-1].notification.id)
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
        with _reading():
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

    def find_answer(self, answer_id: UUID) -> IdempotentAnswer | None:
        """The stored answer to a keyed append, if it was answered."""
        try:
            with _reading():
                answer: Any = self.repository.get(answer_id)
        except AggregateNotFoundError:
            return None
        return answer if isinstance(answer, IdempotentAnswer) else None

    # ------------------------------------------------------------------ plumbing

    def _totals(self, stream_id: UUID) -> LogTotals:
        """Read from the store: always current, whichever process appended last."""
        return LogTotals.after(self._last_event(stream_id))

    def _last_event(self, stream_id: UUID) -> LogEvent | None:
        with _reading():
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
            with _reading():
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

    def _has_own_events(self, stream_id: UUID, after_version: int, command_id: str) -> bool:
        """Whether this command's events were stored, after a write failed ambiguously."""
        try:
            events = self.events.get(stream_id, gt=after_version or None)
            return any(getattr(e, "command_id", None) == command_id for e in events)
        except STORE_ERRORS as error:
            raise WriteOutcomeUnknownError(
                f"the store failed during a write to log {stream_id} and cannot tell "
                f"whether it was stored: {error}"
            ) from error

    def _back_off(self, attempt: int) -> None:
        with self._conflicts_lock:
            self.conflicts_retried += 1
        ceiling = min(self.backoff_cap, self.backoff_base * 2**attempt)
        time.sleep(random.uniform(0, ceiling))

    def _max_position(self) -> int:
        with _reading():
            return self.recorder.max_notification_id() or 0


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    """Reports a store that cannot be reached during a read as StoreUnavailableError."""
    try:
        yield
    except STORE_ERRORS as error:
        raise StoreUnavailableError(f"the event store cannot be reached: {error}") from error


def _batch_for(average_size: int) -> int:
    return max(1, min(MAX_READ_BATCH, READ_BUDGET_BYTES // max(1, average_size)))


def _with_position(appended: Appended, position: int) -> Appended:
    return Appended(appended.seq, appended.size, appended.refused_bytes, position)
