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
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Transcoder
from eventsourcing.utils import strtobool

from domain.application_errors import StoreUnavailableError, WriteOutcomeUnknownError
from domain.context import command_scope
from domain.errors import ConflictError
from domain.idempotency import AlreadyAnsweredError, IdempotentAnswer, IdempotentRequest
from domain.repository import ConsistentRepository
from domain.store_errors import STORE_ERRORS
from domain.transcodings import EscapingJSONTranscoder

Clock = Callable[[], datetime]
AggregateT = TypeVar("AggregateT", bound=Aggregate)


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

    def __init__(self, env: dict[str, str] | None = None, clock: Clock = utc_now) -> None:
        self.clock = clock
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
        return ConsistentRepository(
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

    # ------------------------------------------------------------------ answers

    def find_answer(self, answer_id: UUID) -> IdempotentAnswer | None:
        """The stored answer to a keyed request, if it was answered."""
        return self._find(IdempotentAnswer, answer_id)

    def record_refusal(
        self, request: IdempotentRequest, status_code: int, body: dict[str, Any]
    ) -> None:
        """Remembers a refusal, so a retry of the same keyed request gets it again."""
        with command_scope():
            answer = IdempotentAnswer.record(
                request, now=self.clock(), body=body, status_code=status_code
            )
            # A concurrent attempt that recorded its answer first is the one that stands.
            with contextlib.suppress(IntegrityError):
                self.save(answer)

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
        try:
            recordings = self.save(*items)
        except IntegrityError:
            if self._has_own_events(stream_id, after_version, command_id):
                return Saved(self._max_position(), acknowledged=False)
            return None
        except STORE_ERRORS as error:
            if self._has_own_events(stream_id, after_version, command_id):
                return Saved(self._max_position(), acknowledged=False)
            raise StoreUnavailableError(str(error)) from error
        return Saved(recordings[-1].notification.id)

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
        """Takes the snapshots a write whose acknowledgement was lost skipped.

        The library takes snapshots after recording, so a write that failed
        ambiguously never took the ones that fell due.
        """
        interval = self.snapshotting_intervals.get(type(aggregate))
        if not interval or self.snapshots is None:
            return
        for version in range(saved_version + 1, aggregate.version + 1):
            if version % interval == 0:
                # Only an optimisation: a failure (or a snapshot already there) is harmless.
                with contextlib.suppress(IntegrityError, *STORE_ERRORS):
                    self.take_snapshot(aggregate.id, version=version)

    def _max_position(self) -> int:
        with reading():
            return self.recorder.max_notification_id() or 0
