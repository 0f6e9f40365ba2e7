"""The task ledger: the application service whose methods are tasktrail's commands.

Every command reads the same way: load, call the aggregate, save, return plain
values. How a save survives a lost race or a lost acknowledgement is shared with
the step logs, in `domain.resilient_writes`; the API-key commands are inherited
from `domain.api_key_ledger`. What is left here is the task commands and queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.persistence import JSONTranscoder

from domain.api_key import can_see
from domain.api_key_ledger import ApiKeyLedger
from domain.application_errors import (
    ContentionError,
    TaskNotFoundError,
    VersionMismatchError,
)
from domain.context import command_scope
from domain.errors import DomainError, InvalidRequestError
from domain.idempotency import IdempotentRequest
from domain.plan import JobPlan
from domain.resilient_writes import Saved, Write, reading
from domain.task import Task
from domain.transcodings import JobAsDict, LookalikeMappingAsPairs, StepAsDict
from domain.views import event_view, task_view
from domain.work import Transition


@dataclass(frozen=True)
class Written:
    """What a write stored: the task after it, and the global position of its last event."""

    task: dict[str, Any]
    # None when the write stored nothing: a no-op (a repeated report, a second cancel)
    # without an Idempotency-Key. A keyed no-op stores its answer, and has its position.
    position: int | None


@dataclass(frozen=True)
class ReportItem:
    """One task's part of a batch report: its transitions, applied all or none."""

    task_id: UUID
    transitions: Sequence[Transition]
    expected_version: int | None = None


@dataclass(frozen=True)
class Reported:
    """Where a batch item left its task: its version, and its last event's position."""

    task_id: UUID
    version: int
    # None when the item stored nothing (every transition repeated the current status).
    position: int | None


@dataclass(frozen=True)
class Outcome:
    """Internal: what an action on a loaded task wants saved, and what to answer."""

    aggregates: tuple[Any, ...]
    answer: Task


class TaskLedger(ApiKeyLedger):
    """Tasks and API keys, as event streams in one store (the key commands are inherited)."""

    name = "TaskLedger"
    # The cache fast-forwards from the store on every read, so it never serves a
    # stale version: a read costs one "events after version v" query. Its bound is a
    # count: 1,000 tasks of 100 steps keep a process well under 200 MB (5,000 did not).
    env = {"AGGREGATE_CACHE_MAXSIZE": "1000", "AGGREGATE_CACHE_FASTFORWARD": "y"}
    snapshotting_intervals = {Task: 50}

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
        request: IdempotentRequest | None = None,
    ) -> Written:
        """Records a new task. Its origin must be a task of the same org."""
        if origin_task_id is not None:
            origin = self._find(Task, origin_task_id)
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
            )
            answer = self._answer(request, task)
            position = self._save_new(task, command_id, answer)
        written = Written(task_view(task, self.clock()), position)
        self._check_in(task)  # its first reports need not load it from the store
        return written

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

    def report_many(
        self, items: Sequence[ReportItem], *, org: str | None = None
    ) -> list[Reported | Exception]:
        """Applies each item's transitions to its task, atomically per item, items independently.

        The items are saved together (one transaction where the store allows). An
        item that lost a race to another writer, or names a task an earlier item
        changes, is applied on its own once the others are stored, as `report`
        applies a request (a lost race with an `expected_version` is a conflict).
        Refusals (not found, conflict, invalid) are returned in the item's place;
        a store that cannot be reached fails the whole call.
        """
        results: list[Reported | Exception | None] = [None] * len(items)
        writes: list[Write] = []
        changed: list[tuple[int, Task, int]] = []
        # Items of a task an earlier item changes apply to what that item leaves.
        later: list[int] = []
        for index, item in enumerate(items):
            if any(task.id == item.task_id for _, task, _ in changed):
                later.append(index)
                continue
            with command_scope() as command_id:
                try:
                    task = self._check_out_task(item.task_id, org)
                except TaskNotFoundError as not_found:
                    results[index] = not_found
                    continue
                loaded_version = task.version
                try:
                    _check_expected_version(task, item.expected_version)
                except VersionMismatchError as mismatch:
                    self._check_in(task)
                    results[index] = mismatch
                    continue
                try:
                    task.report(item.transitions, self.clock())
                except DomainError as refusal:
                    results[index] = refusal  # the task may be half-changed: not checked in
                    continue
            if task.version == loaded_version:
                self._check_in(task)
                results[index] = Reported(task.id, task.version, None)
                continue
            writes.append(Write(task.id, loaded_version, command_id, (task,)))
            changed.append((index, task, loaded_version))
        for (index, task, loaded_version), outcome in zip(
            changed, self._save_writes(writes), strict=True
        ):
            if isinstance(outcome, Saved):
                results[index] = Reported(task.id, task.version, outcome.position)
                if outcome.acknowledged:
                    self._check_in(task)
                else:
                    self._take_missed_snapshots(task, loaded_version)
            elif outcome is None:
                later.append(index)
            else:
                raise outcome
        for index in sorted(later):
            results[index] = self._report_alone(items[index], org)
        return [r for r in results if r is not None]

    def _report_alone(self, item: ReportItem, org: str | None) -> Reported | Exception:
        """A batch item applied on its own, the way `report` applies a single request."""
        try:
            written = self.report(
                item.task_id, item.transitions, expected_version=item.expected_version, org=org
            )
        except (TaskNotFoundError, DomainError) as refusal:
            return refusal
        return Reported(item.task_id, written.task["version"], written.position)

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
        if version is None:
            return self._view_now(task_id, org)
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
        return self._event_page(task_id, after_version, limit)

    def timeline_page(
        self,
        task_id: UUID,
        *,
        org: str | None = None,
        after_version: int = 0,
        limit: int | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The task now and a page of its events, from one load of the task."""
        task = self._view_now(task_id, org)
        return task, self._event_page(task_id, after_version, limit)

    def _event_page(
        self, task_id: UUID, after_version: int, limit: int | None
    ) -> list[dict[str, Any]]:
        with reading():
            events = self.events.get(task_id, gt=after_version or None, limit=limit)
            return [event_view(e) for e in events]

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
                # Checked out of the cache, so no copy: it goes back only once stored.
                task = self._check_out_task(task_id, org)
                loaded_version = task.version
                try:
                    _check_expected_version(task, expected_version)
                except VersionMismatchError:
                    self._check_in(task)
                    raise
                outcome = action(task)
                saved_versions = {a.id: _saved_version(a) for a in outcome.aggregates}
                if not any(a.version > saved_versions[a.id] for a in outcome.aggregates):
                    # Nothing changed; a keyed request still remembers its answer.
                    position = self._save_answer_alone(request, outcome.answer, command_id)
                    written = Written(task_view(outcome.answer, self.clock()), position)
                    self._check_in(task, *outcome.aggregates)
                    return written
                answer = self._answer(request, outcome.answer)
                saved = self._save_as_command(
                    task_id, loaded_version, command_id, *outcome.aggregates, answer
                )
                if saved is None:
                    self._raise_if_answered(request)
                    self._raise_if_taken([i for i, v in saved_versions.items() if v == 0])
                    if expected_version is not None:
                        raise VersionMismatchError(
                            "the task changed while this command was being applied",
                            current_status=task.status.value,
                        )
                    self._back_off(attempt)
                    continue
                if not saved.acknowledged:
                    for aggregate in outcome.aggregates:
                        self._take_missed_snapshots(aggregate, saved_versions[aggregate.id])
                    answered = self._load(outcome.answer.id)
                    return Written(task_view(answered, self.clock()), saved.position)
                written = Written(task_view(outcome.answer, self.clock()), saved.position)
                self._check_in(*outcome.aggregates)
                return written
        raise ContentionError(
            f"task {task_id} kept changing under {self.max_attempts} attempts; try again"
        )

    def _check_out_task(self, task_id: UUID, org: str | None) -> Task:
        task = self._check_out(Task, task_id)
        if task is None or not can_see(org, task.org):
            if task is not None:
                self._check_in(task)
            raise TaskNotFoundError(task_id)
        return task

    def _view_now(self, task_id: UUID, org: str | None) -> dict[str, Any]:
        """The task's view now, made from the cached task without copying it first."""
        now = self.clock()
        view = self._view(
            Task, task_id, lambda task: task_view(task, now) if can_see(org, task.org) else None
        )
        if view is None:
            raise TaskNotFoundError(task_id)
        return view

    def _load(self, task_id: UUID, *, org: str | None = None, version: int | None = None) -> Task:
        task = self._find(Task, task_id, version=version)
        if task is None or not can_see(org, task.org):
            raise TaskNotFoundError(task_id)
        return task

    def _version_at(self, task_id: UUID, moment: datetime) -> int:
        version = 0
        with reading():
            events: Iterable[Any] = self.events.get(task_id)
            for stored in events:
                if stored.timestamp > moment:
                    break
                version = stored.originator_version
        if version == 0:
            self._load(task_id)  # unknown task → not found; known → it did not exist yet
        return version


def _check_expected_version(task: Task, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != task.version:
        raise VersionMismatchError(
            f"expected version {expected_version}, but the task is at version {task.version}",
            current_status=task.status.value,
        )


def _saved_version(aggregate: Any) -> int:
    pending = getattr(aggregate, "_pending_events", [])
    return int(aggregate.version) - len(pending)
