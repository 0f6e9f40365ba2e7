"""The task ledger: the application service whose methods are tasktrail's commands.

Every command reads the same way: load, call the aggregate, save, return plain
values. Concurrent writers meet the store's optimistic concurrency; a command that
lost the race reloads and re-applies, a bounded number of times. Every command
attempt carries one command id in its events, so a commit whose acknowledgement was
lost (the connection dropped after COMMIT) is recognised as ours, never reported
as refused.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.utils import get_topic
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    JSONTranscoder,
    OperationalError,
)

from domain.api_key import PLATFORM_SCOPE, ApiKey, key_id_for_token, new_token
from domain.context import command_scope
from domain.errors import ConflictError, InvalidRequestError
from domain.idempotency import AlreadyAnsweredError, IdempotentAnswer, IdempotentRequest
from domain.plan import JobPlan
from domain.task import Task
from domain.transcodings import JobAsDict, StepAsDict
from domain.views import event_view, task_view
from domain.work import Transition

Clock = Callable[[], datetime]


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
    """Raised when the event store cannot be reached and the write's fate is known: not stored."""


@dataclass(frozen=True)
class Written:
    """What a write stored: the task after it, and the global position of its last event."""

    task: dict[str, Any]
    position: int | None  # None when the command changed nothing (a retried no-op)


@dataclass(frozen=True)
class Outcome:
    """Internal: what an action on a loaded task wants saved, and what to answer."""

    aggregates: tuple[Any, ...]
    answer: Task


class TaskLedger(Application[UUID]):
    """Tasks and API keys, as event streams in one store."""

    name = "TaskLedger"
    # The cache fast-forwards from the store on every read, so it never serves a
    # stale version: a read costs one "events after version v" query.
    env = {"AGGREGATE_CACHE_MAXSIZE": "5000", "AGGREGATE_CACHE_FASTFORWARD": "y"}  # noqa: RUF012
    snapshotting_intervals = {Task: 50}  # noqa: RUF012
    max_attempts = 60

    def __init__(self, env: dict[str, str] | None = None, clock: Clock = utc_now) -> None:
        super().__init__(env)
        self.clock = clock
        self.conflicts_retried = 0

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(JobAsDict())
        transcoder.register(StepAsDict())

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
        while True:
            page = self.recorder.select_notifications(
                start=start, limit=500, topics=[topic], inclusive_of_start=False
            )
            for notification in page:
                key = self.repository.get(notification.originator_id)
                if org in (None, PLATFORM_SCOPE) or key.org == org:
                    keys.append(key_view(key))
            if len(page) < 500:
                return keys
            start = page[-1].id

    def revoke_key(self, key_id: UUID, *, org: str | None = None) -> None:
        """Revokes an API key: its token stops working at once."""
        with command_scope():
            key = self._load_key(key_id, org)
            key.revoke(self.clock())
            self.save(key)

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
        events = self.events.get(task_id, gt=after_version or None, limit=limit)
        return [event_view(e) for e in events]

    def find_key(self, token: str) -> dict[str, Any] | None:
        """The active key a bearer token belongs to, or None."""
        try:
            key = self.repository.get(key_id_for_token(token))
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
                if not any(a.version > _saved_version(a) for a in outcome.aggregates):
                    return Written(task_view(outcome.answer, self.clock()), None)
                answer = self._answer(request, outcome.answer)
                try:
                    recordings = self.save(*outcome.aggregates, answer)
                except IntegrityError:
                    if self._has_own_events(task_id, loaded_version, command_id):
                        return self._written_after_ambiguous_commit(outcome.answer.id)
                    self._raise_if_answered(request)
                    if expected_version is not None:
                        raise VersionMismatchError(
                            "the task changed while this command was being applied",
                            current_status=task.status.value,
                        ) from None
                    self.conflicts_retried += 1
                    # Back off a little, with jitter, so racing writers spread out.
                    time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
                    continue
                except (OperationalError, InterfaceError) as error:
                    if self._has_own_events(task_id, loaded_version, command_id):
                        return self._written_after_ambiguous_commit(outcome.answer.id)
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
        except (IntegrityError, OperationalError, InterfaceError) as error:
            if self._has_own_events(aggregate.id, 0, command_id):
                return self.recorder.max_notification_id() or 0
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

    def _raise_if_answered(self, request: IdempotentRequest | None) -> None:
        if request is not None and (answer := self.find_answer(request.answer_id)) is not None:
            raise AlreadyAnsweredError(answer) from None

    def find_answer(self, answer_id: UUID) -> IdempotentAnswer | None:
        """The stored answer to a keyed request, if it was answered."""
        try:
            answer = self.repository.get(answer_id)
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
            try:
                self.save(answer)
            except IntegrityError:
                pass  # a concurrent attempt recorded its answer first; that one stands

    def _has_own_events(self, stream_id: UUID, after_version: int, command_id: str) -> bool:
        try:
            events = self.events.get(stream_id, gt=after_version or None)
            return any(getattr(e, "command_id", None) == command_id for e in events)
        except (OperationalError, InterfaceError):
            return False

    def _written_after_ambiguous_commit(self, task_id: UUID) -> Written:
        # The recording (and so the exact position) was lost with the acknowledgement;
        # the store's current maximum is an upper bound that still orders reads correctly.
        task = self._load(task_id)
        return Written(task_view(task, self.clock()), self.recorder.max_notification_id() or 0)

    def _find(self, task_id: UUID) -> Task | None:
        try:
            task = self.repository.get(task_id)
        except AggregateNotFoundError:
            return None
        return task if isinstance(task, Task) else None

    def _load(self, task_id: UUID, *, org: str | None = None, version: int | None = None) -> Task:
        try:
            task = self.repository.get(task_id, version=version)
        except AggregateNotFoundError:
            raise TaskNotFoundError(task_id) from None
        if not isinstance(task, Task) or (org not in (None, PLATFORM_SCOPE) and task.org != org):
            raise TaskNotFoundError(task_id)
        return task

    def _load_key(self, key_id: UUID, org: str | None) -> ApiKey:
        try:
            key = self.repository.get(key_id)
        except AggregateNotFoundError:
            raise ApiKeyNotFoundError(key_id) from None
        if not isinstance(key, ApiKey) or (org not in (None, PLATFORM_SCOPE) and key.org != org):
            raise ApiKeyNotFoundError(key_id)
        return key

    def _version_at(self, task_id: UUID, moment: datetime) -> int:
        version = 0
        for stored in self.events.get(task_id):
            if stored.timestamp > moment:
                break
            version = stored.originator_version
        if version == 0:
            self._load(task_id)  # unknown task → not found; known → it did not exist yet
        return version


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
