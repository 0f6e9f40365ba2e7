"""The task ledger: the application service whose methods are tasktrail's commands.

Every command reads the same way: load, call the aggregate, save, return plain
values. Concurrent writers meet the store's optimistic concurrency; a command that
lost the race backs off, reloads and re-applies, a bounded number of times. Every
command carries one command id in its events, so a commit whose acknowledgement was
lost (the connection dropped after COMMIT) is recognised as ours, never reported
as refused; when the store cannot even be asked, the caller is told the outcome is
unknown rather than that nothing was stored.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Transcoder
from eventsourcing.utils import get_topic, strtobool

from domain.api_key import PLATFORM_SCOPE, ApiKey, key_id_for_token, new_token
from domain.context import command_scope
from domain.errors import ConflictError, InvalidRequestError
from domain.idempotency import AlreadyAnsweredError, IdempotentAnswer, IdempotentRequest
from domain.plan import JobPlan
from domain.storage import STORE_ERRORS
from domain.task import Task
from domain.transcodings import (
    EscapingJSONTranscoder,
    JobAsDict,
    LookalikeMappingAsPairs,
    StepAsDict,
)
from domain.views import event_view, task_view
from domain.work import Transition

Clock = Callable[[], datetime]
_CONFLICT_OR_STORE_ERRORS: tuple[type[Exception], ...] = (IntegrityError, *STORE_ERRORS)


def utc_now() -> datetime:
    return datetime.now(UTC)


class TaskNotFoundError(Exception):
    """Raised when no task has the given id (in the caller's org)."""


class ApiKeyNotFoundError(Exception):
    """Raised when no API key has the given id (in the caller's org)."""


class VersionMismatchError(ConflictError):
    """Raised when a command expected another version of the task than the stored one."""


class ContentionError(Exception):
    """Raised when concurrent writers kept changing a task for every retry of a command."""


class StoreUnavailableError(Exception):
    """Raised when the event store cannot be reached; a write that raises it stored nothing."""


class WriteOutcomeUnknownError(StoreUnavailableError):
    """Raised when the store failed during a write and could not be asked whether it was stored.

    Retrying is safe for reports and cancels (a repeated transition is a no-op); a
    create should be retried with the same task id (or Idempotency-Key).
    """


@dataclass(frozen=True)
class Written:
    """What a write stored: the task after it, and the global position of its last event."""

    task: dict[str, Any]
    # None when the write stored nothing: a no-op (a repeated report, a second cancel)
    # without an Idempotency-Key. A keyed no-op stores its answer, and has its position.
    position: int | None


@dataclass(frozen=True)
class Outcome:
    """Internal: what an action on a loaded task wants saved, and what to answer."""

    aggregates: tuple[Any, ...]
    answer: Task


class ConsistentRepository(Repository[UUID]):
    """The library's repository, but a cached aggregate is never copied mid-update.

    The library fast-forwards a cached aggregate under a lock, then deep-copies it for
    the caller after releasing that lock: a second reader fast-forwarding the same
    object meanwhile hands the first a copy whose version is older than its state
    (a torn read). Reads of one aggregate are serialised here (striped locks).
    """

    _STRIPES = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stripes = [threading.Lock() for _ in range(self._STRIPES)]

    def get(self, aggregate_id: UUID, *, version: int | None = None, **kwargs: Any) -> Any:
        if self.cache is None or version is not None:
            return super().get(aggregate_id, version=version, **kwargs)
        with self._stripes[hash(aggregate_id) % self._STRIPES]:
            return super().get(aggregate_id, **kwargs)


class TaskLedger(Application[UUID]):
    """Tasks and API keys, as event streams in one store."""

    name = "TaskLedger"
    # The cache fast-forwards from the store on every read, so it never serves a
    # stale version: a read costs one "events after version v" query.
    env = {"AGGREGATE_CACHE_MAXSIZE": "5000", "AGGREGATE_CACHE_FASTFORWARD": "y"}
    snapshotting_intervals = {Task: 50}
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
        """The library's JSON transcoder, made safe for caller-supplied mappings."""
        transcoder = EscapingJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(JobAsDict())
        transcoder.register(StepAsDict())
        transcoder.register(LookalikeMappingAsPairs())

    # ------------------------------------------------------------------ commands

    def create_task(
        self,
        *,
        org: str,
        type: str,
        title: str,
        kind: str,
        author: dict[str, Any],
        project: str | None = None,
        origin_task_id: UUID | None = None,
        silent: bool = False,
        rerunnable: bool = True,
        timeout_seconds: int | None = None,
        labels: dict[str, str] | None = None,
        jobs: Sequence[JobPlan] = (),
        task_id: UUID | None = None,
        request_hash: str | None = None,
        request: IdempotentRequest | None = None,
    ) -> Written:
        """Records a new task. Its origin must be a task of the same org."""
        if origin_task_id is not None:
            origin = self._find(origin_task_id)
            if origin is None or origin.org != org:
                raise InvalidRequestError.at(
                    ("origin_task_id",), f"no task {origin_task_id} in org {org}"
                )
        new_id = task_id or uuid4()
        with command_scope() as command_id:
            task = Task.create(
                task_id=new_id,
                org=org,
                type=type,
                title=title,
                kind=kind,
                author=author,
                now=self.clock(),
                project=project,
                origin_task_id=origin_task_id,
                silent=silent,
                rerunnable=rerunnable,
                timeout_seconds=timeout_seconds,
                labels=labels,
                jobs=jobs,
                request_hash=request_hash,
            )
            answer = self._answer(request, task)
            position = self._save_new(task, command_id, answer)
        return Written(task_view(task, self.clock()), position)

    def report(
        self,
        task_id: UUID,
        transitions: Sequence[Transition],
        *,
        expected_version: int | None = None,
        org: str | None = None,
        request: IdempotentRequest | None = None,
    ) -> Written:
        """Applies a list of transitions atomically: all of them, or none."""

        def action(task: Task) -> Outcome:
            task.report(transitions, self.clock())
            return Outcome((task,), task)

        return self._command(
            task_id, action, expected_version=expected_version, org=org, request=request
        )

    def cancel(
        self,
        task_id: UUID,
        reason: str | None = None,
        *,
        org: str | None = None,
        request: IdempotentRequest | None = None,
    ) -> Written:
        """Requests cancellation: canceled at once if nothing runs, else canceling."""

        def action(task: Task) -> Outcome:
            task.request_cancel(reason, self.clock())
            return Outcome((task,), task)

        return self._command(task_id, action, org=org, request=request)

    def rerun(
        self,
        task_id: UUID,
        *,
        author: dict[str, Any],
        force: bool = False,
        org: str | None = None,
        new_task_id: UUID | None = None,
        request: IdempotentRequest | None = None,
    ) -> Written:
        """Creates a new task rerunning a failed, timed out or canceled one (one atomic save)."""
        new_id = new_task_id or uuid4()

        def action(task: Task) -> Outcome:
            new_task = task.rerun(new_task_id=new_id, author=author, force=force, now=self.clock())
            return Outcome((task, new_task), new_task)

        return self._command(task_id, action, org=org, request=request)

    def time_out(self, task_id: UUID, *, now: datetime | None = None) -> Written | None:
        """Records the hard timeout of a task whose deadline passed; None if it had finished."""

        def action(task: Task) -> Outcome:
            recorded = task.time_out(now or self.clock())
            return Outcome((task,) if recorded else (), task)

        written = self._command(task_id, action)
        return written if written.position is not None else None

    def issue_key(
        self, *, org: str, role: str, name: str, request: IdempotentRequest | None = None
    ) -> tuple[dict[str, Any], str | None, int]:
        """Issues an API key; the token is returned here once and never stored.

        A retried keyed request gets the key again, but not its token (which is gone).
        """
        token = new_token()
        with command_scope() as command_id:
            key = ApiKey.issue(token=token, org=org, role=role, name=name, now=self.clock())
            answer = None
            if request is not None:
                answer = IdempotentAnswer.record(
                    request, now=self.clock(), subject_id=key.id, subject_version=key.version
                )
            position = self._save_new(key, command_id, answer)
        return key_view(key), token, position

    def list_keys(self, *, org: str | None = None) -> list[dict[str, Any]]:
        """Every API key (of one org), oldest first, revoked ones included."""
        topic = get_topic(ApiKey.ApiKeyIssued)
        keys, start = [], None
        with _reading():
            while True:
                page = self.recorder.select_notifications(
                    start=start, limit=500, topics=[topic], inclusive_of_start=False
                )
                for notification in page:
                    key: Any = self.repository.get(UUID(str(notification.originator_id)))
                    if org in (None, PLATFORM_SCOPE) or key.org == org:
                        keys.append(key_view(key))
                if len(page) < 500:
                    return keys
                start = page[-1].id

    def revoke_key(self, key_id: UUID, *, org: str | None = None) -> None:
        """Revokes an API key: its token stops working at once."""
        with command_scope() as command_id:
            for _ in range(self.max_attempts):
                key = self._load_key(key_id, org)
                loaded_version = key.version
                key.revoke(self.clock())  # a second revoke is a conflict, after a reload too
                try:
                    self.save(key)
                except IntegrityError:
                    if self._has_own_events(key_id, loaded_version, command_id):
                        return
                    continue  # revoked concurrently: the reload says so
                except STORE_ERRORS as error:
                    if self._has_own_events(key_id, loaded_version, command_id):
                        return
                    raise StoreUnavailableError(str(error)) from error
                return
        raise ContentionError(f"API key {key_id} kept changing; try again")

    # ------------------------------------------------------------------ queries

    def get_task(
        self,
        task_id: UUID,
        *,
        org: str | None = None,
        version: int | None = None,
        as_of: datetime | None = None,
    ) -> dict[str, Any]:
        """The task now, or as it was at a version or a moment (replayed from its events)."""
        if as_of is not None:
            if as_of.tzinfo is None:
                raise InvalidRequestError.at(("as_of",), "needs a time zone")
            version = self._version_at(task_id, as_of)
        if version is not None and version < 1:
            raise TaskNotFoundError(task_id)
        task = self._load(task_id, org=org, version=version)
        if version is not None and task.version != version:
            raise TaskNotFoundError(task_id)
        return task_view(task, as_of or self.clock())

    def timeline(
        self,
        task_id: UUID,
        *,
        org: str | None = None,
        after_version: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The task's events in order, as recorded."""
        self._load(task_id, org=org)
        with _reading():
            events = self.events.get(task_id, gt=after_version or None, limit=limit)
            return [event_view(e) for e in events]

    def find_key(self, token: str) -> dict[str, Any] | None:
        """The active key a bearer token belongs to, or None."""
        try:
            with _reading():
                key: Any = self.repository.get(key_id_for_token(token))
        except AggregateNotFoundError:
            return None
        if not isinstance(key, ApiKey) or not key.is_active:
            return None
        return key_view(key)

    def get_key(self, key_id: UUID, *, org: str | None = None) -> dict[str, Any]:
        return key_view(self._load_key(key_id, org))

    # ------------------------------------------------------------------ plumbing

    def _command(
        self,
        task_id: UUID,
        action: Callable[[Task], Outcome],
        *,
        expected_version: int | None = None,
        org: str | None = None,
        request: IdempotentRequest | None = None,
    ) -> Written:
        with command_scope() as command_id:
            for attempt in range(self.max_attempts):
                task = self._load(task_id, org=org)
                loaded_version = task.version
                if expected_version is not None and expected_version != loaded_version:
                    raise VersionMismatchError(
                        f"expected version {expected_version}, but the task is at "
                        f"version {loaded_version}",
                        current_status=task.status.value,
                    )
                outcome = action(task)
                saved_versions = {a.id: _saved_version(a) for a in outcome.aggregates}
                if not any(a.version > saved_versions[a.id] for a in outcome.aggregates):
                    # Nothing changed; a keyed request still remembers its answer.
                    position = self._save_answer_alone(request, outcome.answer, command_id)
                    return Written(task_view(outcome.answer, self.clock()), position)
                answer = self._answer(request, outcome.answer)
                try:
                    recordings = self.save(*outcome.aggregates, answer)
                except IntegrityError:
                    if self._has_own_events(task_id, loaded_version, command_id):
                        return self._written_after_ambiguous_commit(outcome, saved_versions)
                    self._raise_if_answered(request)
                    self._raise_if_taken([i for i, v in saved_versions.items() if v == 0])
                    if expected_version is not None:
                        raise VersionMismatchError(
                            "the task changed while this command was being applied",
                            current_status=task.status.value,
                        ) from None
                    self._back_off(attempt)
                    continue
                except STORE_ERRORS as error:
                    if self._has_own_events(task_id, loaded_version, command_id):
                        return self._written_after_ambiguous_commit(outcome, saved_versions)
                    raise StoreUnavailableError(str(error)) from error
                return Written(
                    task_view(outcome.answer, self.clock()), recordings[-1].notification.id
                )
        raise ContentionError(
            f"task {task_id} kept changing under {self.max_attempts} attempts; try again"
        )

    def _save_new(
        self,
        aggregate: Task | ApiKey,
        command_id: str,
        answer: IdempotentAnswer | None = None,
    ) -> int:
        """Saves a new stream; a lost acknowledgement of our own commit counts as success."""
        try:
            return self.save(aggregate, answer)[-1].notification.id
        except _CONFLICT_OR_STORE_ERRORS as error:
            if self._has_own_events(aggregate.id, 0, command_id):
                return self._max_position()
            if isinstance(error, IntegrityError) and answer is not None:
                self._raise_if_answered(IdempotentRequest(answer.id, answer.request_hash, 0))
            if isinstance(error, IntegrityError):
                raise ConflictError(f"{aggregate.id} already exists") from None
            raise StoreUnavailableError(str(error)) from error

    def _answer(
        self, request: IdempotentRequest | None, subject: Task
    ) -> IdempotentAnswer | None:
        if request is None:
            return None
        return IdempotentAnswer.record(
            request, now=self.clock(), subject_id=subject.id, subject_version=subject.version
        )

    def _save_answer_alone(
        self, request: IdempotentRequest | None, subject: Task, command_id: str
    ) -> int | None:
        """Records the answer to a keyed request that changed nothing; its position."""
        answer = self._answer(request, subject)
        if answer is None:
            return None
        try:
            return self.save(answer)[-1].notification.id
        except _CONFLICT_OR_STORE_ERRORS as error:
            if self._has_own_events(answer.id, 0, command_id):
                return self._max_position()
            if isinstance(error, IntegrityError):
                self._raise_if_answered(request)  # a concurrent attempt answered first
                raise ConflictError(f"request {answer.id} is already answered") from None
            raise StoreUnavailableError(str(error)) from error

    def _raise_if_answered(self, request: IdempotentRequest | None) -> None:
        if request is not None and (answer := self.find_answer(request.answer_id)) is not None:
            raise AlreadyAnsweredError(answer) from None

    def find_answer(self, answer_id: UUID) -> IdempotentAnswer | None:
        """The stored answer to a keyed request, if it was answered."""
        try:
            with _reading():
                answer: Any = self.repository.get(answer_id)
        except AggregateNotFoundError:
            return None
        return answer if isinstance(answer, IdempotentAnswer) else None

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

    def _has_own_events(self, stream_id: UUID, after_version: int, command_id: str) -> bool:
        """Whether this command's events were stored, after a write failed ambiguously."""
        try:
            events = self.events.get(stream_id, gt=after_version or None)
            return any(getattr(e, "command_id", None) == command_id for e in events)
        except STORE_ERRORS as error:
            raise WriteOutcomeUnknownError(
                f"the store failed during a write to {stream_id} and cannot tell whether "
                f"it was stored: {error}"
            ) from error

    def _raise_if_taken(self, new_ids: Iterable[UUID]) -> None:
        """A conflict on a new stream is not a race to retry: the id is taken."""
        for new_id in new_ids:
            with _reading():
                taken = bool(list(self.events.get(new_id, limit=1)))
            if taken:
                raise ConflictError(f"{new_id} already exists") from None

    def _back_off(self, attempt: int) -> None:
        """Counts a lost race and sleeps before the next attempt (full jitter)."""
        with self._conflicts_lock:
            self.conflicts_retried += 1
        ceiling = min(self.backoff_cap, self.backoff_base * 2**attempt)
        time.sleep(random.uniform(0, ceiling))

    def _written_after_ambiguous_commit(
        self, outcome: Outcome, saved_versions: dict[UUID, int]
    ) -> Written:
        # The recording (and so the exact position) was lost with the acknowledgement;
        # the store's current maximum is an upper bound that still orders reads correctly.
        # The library takes snapshots after recording, so a due one was skipped: take it.
        for aggregate in outcome.aggregates:
            self._take_missed_snapshots(aggregate, saved_versions[aggregate.id])
        task = self._load(outcome.answer.id)
        return Written(task_view(task, self.clock()), self._max_position())

    def _take_missed_snapshots(self, aggregate: Any, saved_version: int) -> None:
        interval = self.snapshotting_intervals.get(type(aggregate))
        if not interval or self.snapshots is None:
            return
        for version in range(saved_version + 1, aggregate.version + 1):
            if version % interval == 0:
                # Only an optimisation: a failure (or a snapshot already there) is harmless.
                with contextlib.suppress(IntegrityError, *STORE_ERRORS):
                    self.take_snapshot(aggregate.id, version=version)

    def _max_position(self) -> int:
        with _reading():
            return self.recorder.max_notification_id() or 0

    def _find(self, task_id: UUID) -> Task | None:
        try:
            with _reading():
                task: Any = self.repository.get(task_id)
        except AggregateNotFoundError:
            return None
        return task if isinstance(task, Task) else None

    def _load(self, task_id: UUID, *, org: str | None = None, version: int | None = None) -> Task:
        try:
            with _reading():
                task: Any = self.repository.get(task_id, version=version)
        except AggregateNotFoundError:
            raise TaskNotFoundError(task_id) from None
        if not isinstance(task, Task) or (org not in (None, PLATFORM_SCOPE) and task.org != org):
            raise TaskNotFoundError(task_id)
        return task

    def _load_key(self, key_id: UUID, org: str | None) -> ApiKey:
        try:
            with _reading():
                key: Any = self.repository.get(key_id)
        except AggregateNotFoundError:
            raise ApiKeyNotFoundError(key_id) from None
        if not isinstance(key, ApiKey) or (org not in (None, PLATFORM_SCOPE) and key.org != org):
            raise ApiKeyNotFoundError(key_id)
        return key

    def _version_at(self, task_id: UUID, moment: datetime) -> int:
        version = 0
        with _reading():
            events: Iterable[Any] = self.events.get(task_id)
            for stored in events:
                if stored.timestamp > moment:
                    break
                version = stored.originator_version
        if version == 0:
            self._load(task_id)  # unknown task → not found; known → it did not exist yet
        return version


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    """Reports a store that cannot be reached during a read as StoreUnavailableError."""
    try:
        yield
    except STORE_ERRORS as error:
        raise StoreUnavailableError(f"the event store cannot be reached: {error}") from error


def _saved_version(aggregate: Any) -> int:
    pending = getattr(aggregate, "_pending_events", [])
    return int(aggregate.version) - len(pending)


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "org": key.org,
        "role": key.role,
        "name": key.name,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }
