"""How tasktrail's applications write: under one command id, retried, never misreported.

The task ledger and the step logs write the same way. Every event of one command
carries the command's id (`domain.context.command_scope`), so a commit whose
acknowledgement was lost (the connection dropped after COMMIT, surfacing as an
`IntegrityError` when the write is re-sent, or as an `OperationalError`) is
recognised as ours and answered as a success, never as refused; when the store
cannot even be asked, the caller is told the outcome is unknown rather than that
nothing was stored. A writer that lost an optimistic-concurrency race backs off
before it reloads and re-applies. A keyed request's answer (`IdempotentAnswer`) is
saved in the same write as the changes it answers, so a retry finds one or neither.

Writes go through a `GroupCommitter` (`domain.group_commit`): concurrent commands
share one transaction, and each still sees the outcome of its own write. A command
works on an aggregate nobody else holds (checked out of the cache, or a copy: see
`CommandRepository`), which goes back to the cache only once its changes are
stored, so a write that fails leaves nothing unsaved behind for a later read; a
failed group gives its members their pending events back, so each can be written
again alone.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording, Transcoder
from eventsourcing.utils import strtobool

from domain.application_errors import (
    AnswerUnavailableError,
    StoreUnavailableError,
    WriteOutcomeUnknownError,
)
from domain.context import command_scope
from domain.errors import ConflictError
from domain.group_commit import (
    DEFAULT_MAX_GROUP_EVENTS,
    DEFAULT_MAX_WAIT_SECONDS,
    GroupCommitter,
    Member,
    MemberOutcome,
)
from domain.idempotency import AlreadyAnsweredError, IdempotentAnswer, IdempotentRequest
from domain.repository import ConsistentRepository
from domain.store_errors import STORE_ERRORS, StoreUnreachableError
from domain.transcodings import EscapingJSONTranscoder

Clock = Callable[[], datetime]
AggregateT = TypeVar("AggregateT", bound=Aggregate)
ViewT = TypeVar("ViewT")


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Reports a store that cannot be reached during a read as StoreUnavailableError."""
    try:
        yield
    except STORE_ERRORS as error:
        raise StoreUnavailableError(f"the event store cannot be reached: {error}") from error


@dataclass(frozen=True)
class Saved:
    """Where a write's last event stands in the store's global order."""

    position: int
    # False when the acknowledgement was lost and our events were found stored: the
    # exact position was lost with it, and `position` is the store's maximum, an
    # upper bound that still orders reads after the write correctly.
    acknowledged: bool = True


@dataclass(frozen=True)
class Write:
    """One command's write: what it saves, and how to recognise it after an ambiguous commit.

    `items` are aggregates, events, or None (skipped); `stream_id` is the stream whose
    events after `after_version` carry `command_id` if the write was stored.
    """

    stream_id: UUID
    after_version: int
    command_id: str
    items: tuple[Any, ...]


# What became of one write: stored, lost a race (None), or the error for its caller.
WriteOutcome = Saved | None | Exception


def mutate_all(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's `project_aggregate`, without its per-event runtime protocol check.

    That `assert isinstance(event, CanMutateProtocol)` cost more than applying the
    event (a profile of batch ingest: ≈ 6% of the CPU, in replays for snapshots).
    """
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class CommandRepository(ConsistentRepository):
    """The consistent repository, with cheaper copies, and check-out for commands.

    Reads get their own copy of the cached aggregate, taken by pickling it:
    `copy.deepcopy` of a task of 100 steps cost ≈ 3 ms of CPU, a pickle round trip
    a third of that (same copy, under the same per-aggregate lock).

    A command needs no copy at all: it checks the aggregate out (takes it out of
    the cache, then fast-forwards it like any read), changes it, and checks it back
    in only once its changes are stored, so the cache only ever holds stored
    versions. A command that fails simply never checks it in; a read meanwhile
    finds no cached aggregate and loads it from the store.
    """

    def get(self, aggregate_id: UUID, *, version: int | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("projector_func", mutate_all)
        if self.cache is None or version is not None or not self.deepcopy_from_cache:
            return super().get(aggregate_id, version=version, **kwargs)
        with self._stripes[hash(aggregate_id) % self._STRIPES]:
            cached = Repository.get(self, aggregate_id, deepcopy_from_cache=False, **kwargs)
            return _copied(cached)

    def view(self, aggregate_id: UUID, viewer: Callable[[Any], ViewT]) -> ViewT:
        """`viewer` applied to the aggregate as stored now, without copying it.

        It runs under the aggregate's lock, so nothing changes the cached aggregate
        meanwhile; `viewer` must not change it, and returns plain values (as the write
        path's views of the aggregates it checks in already are).
        """
        if self.cache is None or not self.deepcopy_from_cache:
            return viewer(self.get(aggregate_id))
        with self._stripes[hash(aggregate_id) % self._STRIPES]:
            cached = Repository.get(
                self, aggregate_id, deepcopy_from_cache=False, projector_func=mutate_all
            )
            return viewer(cached)

    def check_out(self, aggregate_id: UUID) -> Any:
        """The aggregate as stored now, for one command to change: no one else has it."""
        if self.cache is None:
            return super().get(aggregate_id, projector_func=mutate_all)
        with self._stripes[hash(aggregate_id) % self._STRIPES]:
            try:
                cached: Any = self.cache.get(aggregate_id, evict=True)
            except KeyError:
                cached = None
        if cached is None:
            projector: Any = mutate_all
            return self._reconstruct_aggregate(aggregate_id, None, projector)
        newer = self.event_store.get(originator_id=aggregate_id, gt=cached.version)
        aggregate = mutate_all(cached, newer)
        if aggregate is None:
            raise AggregateNotFoundError(aggregate_id)
        return aggregate

    def check_in(self, *aggregates: Any) -> None:
        """Puts stored aggregates back for the next command (never one with pending events)."""
        if self.cache is None:
            return
        for aggregate in aggregates:
            if aggregate is None or aggregate.pending_events:
                continue
            with self._stripes[hash(aggregate.id) % self._STRIPES]:
                try:
                    cached: Any = self.cache.get(aggregate.id)
                except KeyError:
                    cached = None
                if cached is None or cached.version < aggregate.version:
                    self.cache.put(aggregate.id, aggregate)


class ResilientApplication(Application[UUID]):
    """An application whose commands survive lost races and lost acknowledgements."""

    max_attempts = 60
    # A writer that lost the race sleeps a random time, up to a ceiling that doubles
    # with each lost attempt (from `backoff_base`, at most `backoff_cap`, in seconds):
    # racing writers spread out instead of colliding again at once. Measured with 8
    # writers x 50 reports on one task (PostgreSQL): 2 ms / 50 ms lost ~870 races and
    # took ~4.7 s; 10 ms / 200 ms lose ~180-260 and take ~2-3 s.
    backoff_base = 0.01
    backoff_cap = 0.2

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Clock = utc_now,
        *,
        group_commit_max_events: int = DEFAULT_MAX_GROUP_EVENTS,
        group_commit_max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    ) -> None:
        self.clock = clock
        self._group_write = threading.local()
        self.committer = GroupCommitter(
            self._write_items,
            max_group_events=group_commit_max_events,
            max_wait_seconds=group_commit_max_wait_seconds,
        )
        self.conflicts_retried = 0
        self._conflicts_lock = threading.Lock()
        try:
            super().__init__(env)
        except STORE_ERRORS as error:
            # The pool may already be trying to connect in the background: stop it.
            if (factory := getattr(self, "factory", None)) is not None:
                factory.close()
            raise StoreUnavailableError(f"the event store cannot be reached: {error}") from error

    def construct_repository(self) -> Repository[UUID]:
        """The library's repository, configured the library's way, copying consistently."""
        cache_maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return CommandRepository(
            event_store=self.events,
            snapshot_store=self.snapshots,
            cache_maxsize=int(cache_maxsize) if cache_maxsize else None,
            fastforward=strtobool(self.env.get(self.AGGREGATE_CACHE_FASTFORWARD, "y")),
            fastforward_skipping=strtobool(
                self.env.get(self.AGGREGATE_CACHE_FASTFORWARD_SKIPPING, "n")
            ),
            deepcopy_from_cache=strtobool(self.env.get(self.DEEPCOPY_FROM_AGGREGATE_CACHE, "y")),
        )

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON transcoder, made safe for caller-supplied mappings (actors)."""
        transcoder = EscapingJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    # ------------------------------------------------------------------ reads

    def _find(
        self, kind: type[AggregateT], aggregate_id: UUID, *, version: int | None = None
    ) -> AggregateT | None:
        """The aggregate (at a version), or None when there is none of that kind."""
        try:
            with reading():
                found: Any = self.repository.get(aggregate_id, version=version)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, kind) else None

    def _view(
        self, kind: type[AggregateT], aggregate_id: UUID, viewer: Callable[[AggregateT], ViewT]
    ) -> ViewT | None:
        """`viewer` applied to the aggregate now, without a copy; None when there is
        none of that kind (see `CommandRepository.view`)."""

        def view_if_kind(found: Any) -> tuple[ViewT] | None:
            return (viewer(found),) if isinstance(found, kind) else None

        repository: Any = self.repository
        try:
            with reading():
                viewed: tuple[ViewT] | None = repository.view(aggregate_id, view_if_kind)
        except AggregateNotFoundError:
            return None
        return None if viewed is None else viewed[0]

    def _check_out(self, kind: type[AggregateT], aggregate_id: UUID) -> AggregateT | None:
        """The aggregate for a command to change (see `CommandRepository`), or None."""
        repository: Any = self.repository
        try:
            with reading():
                found: Any = repository.check_out(aggregate_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(found, kind):
            repository.check_in(found)
            return None
        return found

    def _check_in(self, *aggregates: Any) -> None:
        """Hands aggregates whose state is stored back to the cache."""
        repository: Any = self.repository
        repository.check_in(*aggregates)

    # ------------------------------------------------------------------ answers

    def find_answer(self, answer_id: UUID) -> IdempotentAnswer | None:
        """The stored answer to a keyed request, if it was answered."""
        return self._find(IdempotentAnswer, answer_id)

    def record_refusal(
        self, request: IdempotentRequest, status_code: int, body: dict[str, Any]
    ) -> None:
        """Remembers a refusal, so a retry of the same keyed request gets it again."""
        self.record_answer(request, status_code, body)

    def record_answer(
        self, request: IdempotentRequest, status_code: int, body: dict[str, Any]
    ) -> None:
        """Remembers an answer's whole body, so a retry of the same keyed request gets it."""
        with command_scope():
            answer = IdempotentAnswer.record(
                request, now=self.clock(), body=body, status_code=status_code
            )
            # A concurrent attempt that recorded its answer first is the one that stands.
            with contextlib.suppress(IntegrityError):
                self.committer.commit(_member(answer))

    def _answer(self, request: IdempotentRequest | None, subject: Any) -> IdempotentAnswer | None:
        """The answer to save with a keyed request's changes to `subject` (an id, a version)."""
        if request is None:
            return None
        return IdempotentAnswer.record(
            request, now=self.clock(), subject_id=subject.id, subject_version=subject.version
        )

    def _raise_if_answered(self, request: IdempotentRequest | None) -> None:
        if request is not None and (answer := self.find_answer(request.answer_id)) is not None:
            raise AlreadyAnsweredError(answer) from None

    # ------------------------------------------------------------------ writes

    def _save_as_command(
        self, stream_id: UUID, after_version: int, command_id: str, *items: Any
    ) -> Saved | None:
        """Saves `items` atomically; None when a concurrent write to `stream_id` won.

        A failure after which this command's events are found in the stream anyway
        was a lost acknowledgement: it counts as saved.
        """
        outcome = self._save_writes([Write(stream_id, after_version, command_id, items)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _save_writes(self, writes: list[Write]) -> list[WriteOutcome]:
        """Saves independent writes, each atomically, together where they can be.

        Each outcome is what `_save_as_command` would make of that write alone; an
        error is returned, not raised, so one write's failure spares the others.
        """
        members = [_member(*write.items) for write in writes]
        # The versions stored before each write, for the snapshots that fall due in it.
        before = [
            [(a, int(a.version) - len(a.pending_events)) for a in _aggregates(write.items)]
            for write in writes
        ]
        outcomes = self.committer.commit_all(members)
        return [
            self._settle(write, aggregates, outcome)
            for write, aggregates, outcome in zip(writes, before, outcomes, strict=True)
        ]

    def _settle(
        self, write: Write, aggregates: list[tuple[Any, int]], outcome: MemberOutcome
    ) -> WriteOutcome:
        if isinstance(outcome, StoreUnreachableError):
            # No connection, or no lock on the table, was had: nothing can have been
            # written, so there is nothing to look for (and no second wait for it).
            return _unavailable(outcome)
        if isinstance(outcome, Exception) and isinstance(outcome, (IntegrityError, *STORE_ERRORS)):
            try:
                stored = self._has_own_events(
                    write.stream_id, write.after_version, write.command_id
                )
            except WriteOutcomeUnknownError as error:
                return error
            if stored:
                return self._found_stored()
            if isinstance(outcome, IntegrityError):
                return None
            return _unavailable(outcome)
        if isinstance(outcome, Exception):
            return outcome
        if isinstance(outcome, BaseException):
            raise outcome
        for aggregate, saved_version in aggregates:
            self._take_missed_snapshots(aggregate, saved_version)
        if not outcome:
            return Saved(self._max_position())
        return Saved(outcome[-1].notification.id)

    def _write_items(self, items: Sequence[Any]) -> Sequence[Recording[UUID]]:
        """One transaction, through the library's `save`: the group committer's way in.

        Snapshots wait for each writer to take its own after the commit, so the
        group's acknowledgement waits for no one's snapshot. A failed write gives the
        aggregates their events back, for the retry of each member alone.
        """
        pending = [(a, list(a.pending_events)) for a in _aggregates(items)]
        self._group_write.active = True
        try:
            return self.save(*items)
        except BaseException:
            for aggregate, events in pending:
                aggregate.pending_events[:0] = events[: len(events) - len(aggregate.pending_events)]
            raise
        finally:
            self._group_write.active = False

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        if not getattr(self._group_write, "active", False):
            super()._take_snapshots(processing_event)

    def _save_new(
        self, aggregate: Aggregate, command_id: str, answer: IdempotentAnswer | None = None
    ) -> int:
        """Saves a new stream; a lost acknowledgement of our own commit counts as success."""
        saved = self._save_as_command(aggregate.id, 0, command_id, aggregate, answer)
        if saved is None:
            if answer is not None:
                self._raise_if_answered(IdempotentRequest(answer.id, answer.request_hash, 0))
            raise ConflictError(f"{aggregate.id} already exists")
        return saved.position

    def _save_answer_alone(
        self, request: IdempotentRequest | None, subject: Any, command_id: str
    ) -> int | None:
        """Records the answer to a keyed request that changed nothing; its position."""
        answer = self._answer(request, subject)
        if answer is None:
            return None
        saved = self._save_as_command(answer.id, 0, command_id, answer)
        if saved is None:
            self._raise_if_answered(request)  # a concurrent attempt answered first
            raise ConflictError(f"request {answer.id} is already answered")
        return saved.position

    def _has_own_events(self, stream_id: UUID, after_version: int, command_id: str) -> bool:
        """Whether this command's events were stored, after a write failed ambiguously."""
        try:
            events = self.events.get(stream_id, gt=after_version or None)
            return any(getattr(e, "command_id", None) == command_id for e in events)
        except STORE_ERRORS as error:
            raise WriteOutcomeUnknownError(
                f"the store failed during a write to stream {stream_id} and cannot tell "
                f"whether it was stored: {error}"
            ) from error

    def _raise_if_taken(self, new_ids: Iterable[UUID]) -> None:
        """A conflict on a new stream is not a race to retry: the id is taken."""
        for new_id in new_ids:
            with reading():
                taken = bool(list(self.events.get(new_id, limit=1)))
            if taken:
                raise ConflictError(f"{new_id} already exists")

    def _back_off(self, attempt: int) -> None:
        """Counts a lost race and sleeps before the next attempt (full jitter)."""
        with self._conflicts_lock:
            self.conflicts_retried += 1
        ceiling = min(self.backoff_cap, self.backoff_base * 2**attempt)
        time.sleep(random.uniform(0, ceiling))

    def _take_missed_snapshots(self, aggregate: Any, saved_version: int) -> None:
        """Takes the snapshots that fell due in the versions a write stored.

        Writers take their own snapshots after their commit (see `_write_items`),
        and a write whose acknowledgement was lost takes the ones it skipped. The
        writer's aggregate is the stored state at its version: a snapshot there is
        taken from it, without replaying the stream.
        """
        interval = self.snapshotting_intervals.get(type(aggregate))
        if not interval or self.snapshots is None:
            return
        for version in range(saved_version + 1, aggregate.version + 1):
            if version % interval == 0:
                # Only an optimisation: a failure (or a snapshot already there) is harmless.
                with contextlib.suppress(IntegrityError, *STORE_ERRORS):
                    if version == aggregate.version:
                        snapshot_class: Any = getattr(
                            type(aggregate), "Snapshot", self.snapshot_class
                        )
                        self.snapshots.put([snapshot_class.take(aggregate)])
                    else:
                        self.take_snapshot(aggregate.id, version=version, projector_func=mutate_all)

    def _found_stored(self) -> Saved | AnswerUnavailableError:
        """The outcome of a write whose events a read-back found stored."""
        try:
            return Saved(self._max_position(), acknowledged=False)
        except StoreUnavailableError as error:
            # Stored, so never "stored nothing": the answer alone is missing.
            unavailable = AnswerUnavailableError(f"stored, but its position was lost: {error}")
            unavailable.__cause__ = error
            return unavailable

    def _max_position(self) -> int:
        with reading():
            return self.recorder.max_notification_id() or 0


def _copied(aggregate: Any) -> Any:
    try:
        return pickle.loads(pickle.dumps(aggregate, pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError):
        return copy.deepcopy(aggregate)


def _aggregates(items: Sequence[Any]) -> list[Any]:
    return [i for i in items if i is not None and hasattr(i, "pending_events")]


def _member(*items: Any) -> Member:
    """A write for the group committer: its items, their streams, their number of events."""
    streams: set[UUID] = set()
    size = 0
    for item in items:
        if item is None:
            continue
        # Not isinstance(item, DomainEventProtocol): a runtime protocol check costs more
        # than the rest of this function.
        if hasattr(item, "pending_events"):
            if item.pending_events:
                streams.add(item.id)
                size += len(item.pending_events)
        else:
            streams.add(item.originator_id)
            size += 1
    return Member(tuple(i for i in items if i is not None), frozenset(streams), size)


def _unavailable(cause: BaseException) -> StoreUnavailableError:
    error = StoreUnavailableError(str(cause))
    error.__cause__ = cause
    return error
