"""The Task aggregate: one task, its jobs and steps, and every rule that changes them.

Public methods are the commands: they check the rules (domain.md) and decide every
value, then trigger events. The `@event` methods only assign, so replaying last
year's events never re-runs today's checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.chain import GENESIS, hashed_entry, json_entry_hash
from domain.errors import (
    ConflictError,
    InvalidRequestError,
    TransitionRefusedError,
    TransitionTarget,
    UnknownTargetError,
)
from domain.inputs import validate_task_inputs
from domain.plan import JobPlan, validate_plan
from domain.stamped import StampedEvent
from domain.status import (
    JOB_TRANSITIONS,
    RERUNNABLE,
    STEP_TRANSITIONS,
    UNSATISFIABLE,
    Status,
    derive_task_status,
)
from domain.work import Job, Step, Transition

IMMEDIATE = "immediate"
EXECUTABLE = "executable"
DEFAULT_TIMEOUT_SECONDS = 3600
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
SYSTEM_FAILURE_MESSAGE = "The task failed for an internal reason; please contact support."


def deadline_of(started_at: datetime, timeout_seconds: int) -> datetime:
    """When a task started at `started_at` times out: the one rule, for the index too."""
    return started_at + timedelta(seconds=timeout_seconds)


class Task(Aggregate):
    """A recorded operation of the platform, immediate or executable."""

    # The hash of the latest event: the next event chains to it (snapshots carry it).
    head_hash: str = GENESIS

    class Event(StampedEvent, Aggregate.Event):
        """A task event, chained: it carries the hash before it and its own (domain.chain).

        The hash is computed once, when the event is triggered; a stored event is
        decoded without `__init__`, so it keeps the hash it was stored with, and
        verification can compare the two.
        """

        prev_hash: str = field(default=GENESIS, kw_only=True)
        hash: str | None = field(default=None, init=False)

        def __post_init__(self) -> None:
            super().__post_init__()
            object.__setattr__(self, "hash", json_entry_hash(hashed_entry(self)))

        def mutate(self, aggregate: Any) -> Any:
            aggregate = super().mutate(aggregate)
            aggregate.head_hash = self.hash
            return aggregate

    class Created(Event, Aggregate.Created):
        pass

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        # Every later event chains to the one before; Created chains to GENESIS.
        super().trigger_event(event_class, prev_hash=self.head_hash, **kwargs)

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        *,
        task_id: UUID,
        org: str,
        type: str,
        title: str,
        kind: str,
        author: dict[str, Any],
        now: datetime,
        project: str | None = None,
        origin_task_id: UUID | None = None,
        silent: bool = False,
        rerunnable: bool = True,
        timeout_seconds: int | None = None,
        labels: dict[str, str] | None = None,
        jobs: Sequence[JobPlan] = (),
        rerun_of: UUID | None = None,
        forced: bool = False,
    ) -> Task:
        """Records a new task after checking its fields and its plan."""
        validate_task_inputs(org=org, task_type=type, author=author, labels=labels)
        if kind == IMMEDIATE:
            if jobs:
                raise InvalidRequestError.at(("jobs",), "an immediate task has no jobs")
            if timeout_seconds is not None:
                raise InvalidRequestError.at(
                    ("timeout_seconds",), "an immediate task has no timeout"
                )
        elif kind == EXECUTABLE:
            validate_plan(tuple(jobs))
            if timeout_seconds is None:
                timeout_seconds = DEFAULT_TIMEOUT_SECONDS
            if not 1 <= timeout_seconds <= MAX_TIMEOUT_SECONDS:
                raise InvalidRequestError.at(
                    ("timeout_seconds",), f"must be between 1 and {MAX_TIMEOUT_SECONDS}"
                )
        else:
            raise InvalidRequestError.at(("kind",), "must be 'immediate' or 'executable'")
        return cls._create(
            cls.TaskCreated,
            id=task_id,
            org=org,
            type=type,
            title=title,
            kind=kind,
            author=dict(author),
            project=project,
            origin_task_id=origin_task_id,
            silent=silent,
            rerunnable=rerunnable,
            timeout_seconds=timeout_seconds,
            labels=dict(labels or {}),
            jobs=[j.as_dict() for j in jobs],
            rerun_of=rerun_of,
            forced=forced,
            occurred_at=now,
        )

    class TaskCreated(Created):
        org: str
        type: str
        title: str
        kind: str
        author: dict[str, Any]
        project: str | None
        origin_task_id: UUID | None
        silent: bool
        rerunnable: bool
        timeout_seconds: int | None
        labels: dict[str, str]
        jobs: list[dict[str, Any]]
        rerun_of: UUID | None
        forced: bool
        occurred_at: datetime

    @event(TaskCreated)
    def __init__(
        self,
        org: str,
        type: str,
        title: str,
        kind: str,
        author: dict[str, Any],
        project: str | None,
        origin_task_id: UUID | None,
        silent: bool,
        rerunnable: bool,
        timeout_seconds: int | None,
        labels: dict[str, str],
        jobs: list[dict[str, Any]],
        rerun_of: UUID | None,
        forced: bool,
        occurred_at: datetime,
    ) -> None:
        self.org = org
        self.type = type
        self.title = title
        self.kind = kind
        self.author = author
        self.project = project
        self.origin_task_id = origin_task_id
        self.silent = silent
        self.rerunnable = rerunnable
        self.timeout_seconds = timeout_seconds
        self.labels = labels
        self.jobs = [Job.from_plan(j) for j in jobs]
        self.rerun_of = rerun_of
        self.forced = forced
        self.reruns: list[UUID] = []
        self.created_at = occurred_at
        self.queued_at: datetime | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = occurred_at if kind == IMMEDIATE else None
        self.status_value = (Status.DONE if kind == IMMEDIATE else Status.PENDING).value
        self.cancel_requested = False
        self.cancel_reason: str | None = None
        self.hard_timed_out = False
        self.failure: dict[str, Any] | None = None

    # ------------------------------------------------------------------ reading

    @property
    def status(self) -> Status:
        return Status(self.status_value)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def deadline(self) -> datetime | None:
        """When the hard timeout fires: started_at + timeout_seconds, once started."""
        if self.started_at is None or self.timeout_seconds is None:
            return None
        return deadline_of(self.started_at, self.timeout_seconds)

    def find_job(self, key: str) -> Job | None:
        return next((j for j in self.jobs if j.key == key), None)

    def job(self, key: str) -> Job:
        found = self.find_job(key)
        if found is None:
            raise KeyError(key)
        return found

    def plan(self) -> list[JobPlan]:
        return [JobPlan.from_dict(j.plan()) for j in self.jobs]

    def derived_status(self) -> Status:
        if self.kind == IMMEDIATE:
            return Status.DONE
        return derive_task_status(
            queued=self.queued_at is not None,
            started=self.started_at is not None,
            cancel_requested=self.cancel_requested,
            hard_timed_out=self.hard_timed_out,
            job_statuses=[j.status for j in self.jobs],
        )

    # ------------------------------------------------------------------ commands

    def report(self, transitions: Sequence[Transition], now: datetime) -> None:
        """Applies reported transitions in order; the first illegal one refuses them all.

        The caller must discard this object when it raises: events of earlier items
        have already been applied to it (the application reloads; nothing is saved).
        """
        for index, transition in enumerate(transitions):
            try:
                self._apply(transition, now)
            except (TransitionRefusedError, UnknownTargetError) as refusal:
                refusal.index = index
                raise

    def request_cancel(self, reason: str | None, now: datetime) -> None:
        """Cancels what has not started; running work is reported canceled (or finishes)."""
        if self.kind == IMMEDIATE or self.is_terminal:
            raise ConflictError(
                f"task is already {self.status.label}; there is nothing to cancel",
                current_status=self.status.value,
            )
        if self.cancel_requested:
            return
        self._cancel_requested(reason=reason, occurred_at=now)
        for job in self.jobs:
            if job.status in (Status.PENDING, Status.QUEUED, Status.BACKED_OFF):
                self._finish_job(job, Status.CANCELED, now, now, reason="cancellation requested")
        self._settle(now, now)

    def time_out(self, now: datetime) -> bool:
        """Records the hard timeout; returns False (and records nothing) on a finished task."""
        if self.is_terminal:
            return False
        deadline = self.deadline
        if deadline is None:
            raise ConflictError(
                "task has not started, so its timeout is not running",
                current_status=self.status.value,
            )
        if now < deadline:
            raise ConflictError(
                f"task's timeout fires at {deadline.isoformat()}, not yet",
                current_status=self.status.value,
            )
        self._timed_out(deadline=deadline, occurred_at=now)
        for job in self.jobs:
            if not job.status.is_terminal:
                self._job_finished(
                    job=job.key,
                    status=Status.TIMED_OUT.value,
                    reason="the task's hard timeout fired",
                    error=None,
                    closed_steps={k: Status.TIMED_OUT.value for k in job.open_steps()},
                    occurred_at=now,
                )
        self._settle(now, now)
        return True

    def rerun(
        self, *, new_task_id: UUID, author: dict[str, Any], force: bool, now: datetime
    ) -> Task:
        """Creates the new task that reruns this one, and records the link on both."""
        if self.kind == IMMEDIATE:
            raise ConflictError(
                "an immediate task cannot be rerun", current_status=self.status.value
            )
        if not self.rerunnable:
            raise ConflictError(
                f"tasks of type {self.type} are not rerunnable", current_status=self.status.value
            )
        if self.status not in RERUNNABLE:
            raise ConflictError(
                "only a failed, timed out or canceled task can be rerun; "
                f"this one is {self.status.label}",
                current_status=self.status.value,
            )
        new_task = Task.create(
            task_id=new_task_id,
            org=self.org,
            type=self.type,
            title=self.title,
            kind=EXECUTABLE,
            author=author,
            now=now,
            project=self.project,
            origin_task_id=self.origin_task_id,
            silent=self.silent,
            rerunnable=self.rerunnable,
            timeout_seconds=self.timeout_seconds,
            labels=self.labels,
            jobs=self.plan(),
            rerun_of=self.id,
            forced=force,
        )
        self._rerun(rerun_task_id=new_task.id, forced=force, occurred_at=now)
        return new_task

    # ------------------------------------------------------------------ rules

    def _apply(self, t: Transition, now: datetime) -> None:
        at = t.at or now
        if self.kind == IMMEDIATE:
            raise self._refuse(
                t, self.status, "an immediate task is done when recorded: it accepts no reports"
            )
        if t.job is None:
            if t.step is not None:
                raise UnknownTargetError(("step",), "a step transition also needs its job")
            self._apply_to_task(t, at, now)
            return
        job = self.find_job(t.job)
        if job is None:
            raise UnknownTargetError(("job",), f"task has no job {t.job!r}")
        if t.step is None:
            self._apply_to_job(job, t, at, now)
            return
        step = job.find_step(t.step)
        if step is None:
            raise UnknownTargetError(("step",), f"job {job.key} has no step {t.step!r}")
        self._apply_to_step(job, step, t, at, now)

    def _refuse(self, t: Transition, current: Status, reason: str) -> TransitionRefusedError:
        return TransitionRefusedError(
            reason,
            target=TransitionTarget(t.job, t.step),
            current=current.value,
            requested=t.status.value,
        )

    def _refuse_if_finished(self, t: Transition, current: Status) -> None:
        if self.status == Status.TIMED_OUT and self.hard_timed_out:
            raise self._refuse(t, current, "task timed out: it accepts no more reports")
        if self.status == Status.CANCELED:
            raise self._refuse(t, current, "task was canceled: it accepts no more reports")
        if self.is_terminal:
            raise self._refuse(
                t, current, f"task is {self.status.label}: it accepts no more reports"
            )

    def _apply_to_task(self, t: Transition, at: datetime, now: datetime) -> None:
        if t.status != Status.QUEUED:
            raise self._refuse(
                t,
                self.status,
                f"task cannot be set {t.status.label}: it accepts only queued, "
                "its other statuses follow from its jobs",
            )
        if self.queued_at is not None and not self.is_terminal:
            return  # already queued: a retry
        self._refuse_if_finished(t, self.status)
        self._queue(at, now)
        self._settle(at, now)

    def _apply_to_job(self, job: Job, t: Transition, at: datetime, now: datetime) -> None:
        current = job.status
        if t.status == current:
            return
        self._refuse_if_finished(t, current)
        label = f"job {job.key}"
        if current.is_terminal:
            raise self._refuse(t, current, f"{label} already finished {current.label}")
        if t.status in (Status.DONE, Status.DONE_WITH_WARNINGS):
            open_steps = ", ".join(
                f"step {s.key} is {s.status.label}" for s in job.steps if not s.status.is_success
            )
            raise self._refuse(
                t,
                current,
                f"{label} cannot be set {t.status.label}: "
                f"it finishes by itself when its steps finish ({open_steps})",
            )
        if t.status in (Status.QUEUED, Status.PENDING, Status.CANCELING):
            raise self._refuse(
                t, current, f"{label} cannot be set {t.status.label}: that status is derived"
            )
        if t.status not in JOB_TRANSITIONS.get(current, frozenset()):
            raise self._refuse(
                t, current, f"{label} cannot go from {current.label} to {t.status.label}"
            )
        if t.status == Status.IN_PROGRESS:
            self._refuse_start(t, job, current)
            self._start_job(job, at, now)
        elif t.status == Status.BACKED_OFF:
            self._job_backed_off(
                job=job.key,
                attempt=job.attempt,
                retry_at=t.retry_at,
                error=t.error,
                reset_steps=[s.key for s in job.steps if s.status != Status.PENDING],
                occurred_at=at,
            )
            if self.cancel_requested:
                # Its retry could never start: canceled at once, like every waiting job.
                self._finish_job(job, Status.CANCELED, at, now, reason="cancellation requested")
        else:  # failed, canceled, timed_out
            self._finish_job(job, t.status, at, now, reason=None, error=t.error)
        self._settle(at, now)

    def _refuse_start(self, t: Transition, job: Job, current: Status) -> None:
        """Refuses to start `job` or its step; `current` is the reported target's status."""
        label = f"job {job.key}" if t.step is None else f"step {t.step}"
        if self.cancel_requested:
            raise self._refuse(
                t, current, f"{label} cannot start: cancellation was requested, nothing new starts"
            )
        if job.status == Status.PENDING and not (self.queued_at is None and self._needs_met(job)):
            waiting = ", ".join(
                f"{need} ({self.job(need).status.label})"
                for need in job.needs
                if not self.job(need).status.is_success
            )
            whose = "it" if t.step is None else f"job {job.key}"
            raise self._refuse(t, current, f"{label} cannot start yet: {whose} needs {waiting}")

    def _apply_to_step(
        self, job: Job, step: Step, t: Transition, at: datetime, now: datetime
    ) -> None:
        current = step.status
        status, downgraded = t.status, False
        if (
            self.forced
            and status == Status.FAILED
            and t.error is not None
            and t.error.get("user_facing") is True
        ):
            status, downgraded = Status.DONE_WITH_WARNINGS, True
        if status == current:
            return
        self._refuse_if_finished(t, current)
        label = f"step {step.key}"
        if current.is_terminal:
            raise self._refuse(t, current, f"{label} already finished {current.label}")
        # Judged on the reported status: a downgraded failure is as legal as the failure.
        if t.status not in STEP_TRANSITIONS.get(current, frozenset()):
            raise self._refuse(
                t, current, f"{label} cannot go from {current.label} to {t.status.label}"
            )
        if job.status.is_terminal:
            raise self._refuse(t, current, f"{label} cannot change: job {job.key} finished")
        if status == Status.IN_PROGRESS:
            self._refuse_start(t, job, current)
            index = job.step_index(step.key)
            if index > 0:
                previous = job.steps[index - 1]
                if not previous.status.is_success:
                    raise self._refuse(
                        t,
                        current,
                        f"{label} cannot start: step {previous.key} is {previous.status.label}",
                    )
            if job.status != Status.IN_PROGRESS:
                self._start_job(job, at, now)
            self._step_started(job=job.key, step=step.key, occurred_at=at)
        else:
            self._step_finished(
                job=job.key,
                step=step.key,
                status=status.value,
                error=t.error,
                downgraded=downgraded,
                occurred_at=at,
            )
            self._after_step_finished(job, step, at, now)
        self._settle(at, now)

    def _after_step_finished(self, job: Job, step: Step, at: datetime, now: datetime) -> None:
        if step.status.is_success:
            if all(s.status.is_success for s in job.steps):
                warned = any(s.status == Status.DONE_WITH_WARNINGS for s in job.steps)
                outcome = Status.DONE_WITH_WARNINGS if warned else Status.DONE
                self._finish_job(job, outcome, at, now, reason=None)
            return
        reason = f"step {step.key} {step.status.label}"
        outcome = Status.CANCELED if step.status == Status.CANCELED else step.status
        self._finish_job(job, outcome, at, now, reason=reason, error=step.error)

    # ------------------------------------------------------------------ cascades

    def _queue(self, at: datetime, now: datetime) -> None:
        self._queued(queued_at=now, occurred_at=at)
        for job in self.jobs:
            if job.status == Status.PENDING and self._needs_met(job):
                self._job_queued(job=job.key, occurred_at=at)

    def _start_job(self, job: Job, at: datetime, now: datetime) -> None:
        if self.queued_at is None:
            self._queue(at, now)
        self._job_started(
            job=job.key,
            attempt=job.attempt + 1,
            task_started_at=now if self.started_at is None else None,
            occurred_at=at,
        )

    def _needs_met(self, job: Job) -> bool:
        return all(self.job(need).status.is_success for need in job.needs)

    def _finish_job(
        self,
        job: Job,
        status: Status,
        at: datetime,
        now: datetime,
        *,
        reason: str | None,
        error: dict[str, Any] | None = None,
    ) -> None:
        closing = Status.TIMED_OUT if status == Status.TIMED_OUT else Status.CANCELED
        self._job_finished(
            job=job.key,
            status=status.value,
            reason=reason,
            error=error,
            closed_steps={k: closing.value for k in job.open_steps()},
            occurred_at=at,
        )
        if status in UNSATISFIABLE:
            for dependant in self.jobs:
                if job.key in dependant.needs and not dependant.status.is_terminal:
                    self._finish_job(
                        dependant,
                        Status.CANCELED,
                        at,
                        now,
                        reason=f"need {job.key} {status.label}",
                    )
        elif self.queued_at is not None and not self.cancel_requested:
            for dependant in self.jobs:
                if (
                    job.key in dependant.needs
                    and dependant.status == Status.PENDING
                    and self._needs_met(dependant)
                ):
                    self._job_queued(job=dependant.key, occurred_at=at)

    def _settle(self, at: datetime, now: datetime) -> None:
        """Records the task's derived status when it changed."""
        derived = self.derived_status()
        if derived == self.status:
            return
        if derived.is_terminal:
            self._finished(
                status=derived.value,
                failure=self._failure_summary(derived),
                finished_at=now,
                occurred_at=at,
            )
        else:
            self._status_changed(status=derived.value, occurred_at=at)

    def _failure_summary(self, status: Status) -> dict[str, Any] | None:
        if status == Status.TIMED_OUT and self.hard_timed_out:
            return {
                "reason": "timeout",
                "message": f"The task exceeded its timeout of {self.timeout_seconds} s.",
            }
        if status not in (Status.FAILED, Status.TIMED_OUT):
            return None
        culprits = [j for j in self.jobs if j.status == status]
        culprit = min(
            culprits,
            key=lambda j: (j.finished_at or self.created_at, self.jobs.index(j)),
        )
        step = next((s for s in culprit.steps if s.status == status), None)
        if culprit.system or (step is not None and step.system):
            return {
                "reason": "system",
                "message": SYSTEM_FAILURE_MESSAGE,
                "job": culprit.key,
                "step": step.key if step else None,
                "error": culprit.error,
            }
        what = f"step {step.key} of job {culprit.key}" if step else f"job {culprit.key}"
        detail = (culprit.error or {}).get("message")
        message = f"{what.capitalize()} {status.label}" + (f": {detail}" if detail else ".")
        return {
            "reason": "job",
            "message": message,
            "job": culprit.key,
            "step": step.key if step else None,
            "error": culprit.error,
        }

    # ------------------------------------------------------------------ events

    @event("TaskQueued")
    def _queued(self, queued_at: datetime, occurred_at: datetime) -> None:
        self.queued_at = queued_at
        self.status_value = Status.QUEUED.value

    @event("JobQueued")
    def _job_queued(self, job: str, occurred_at: datetime) -> None:
        self.job(job).status_value = Status.QUEUED.value

    @event("JobStarted")
    def _job_started(
        self, job: str, attempt: int, task_started_at: datetime | None, occurred_at: datetime
    ) -> None:
        target = self.job(job)
        target.status_value = Status.IN_PROGRESS.value
        target.attempt = attempt
        target.retry_at = None
        if target.started_at is None:
            target.started_at = occurred_at
        if task_started_at is not None:
            self.started_at = task_started_at

    @event("StepStarted")
    def _step_started(self, job: str, step: str, occurred_at: datetime) -> None:
        target = self.job(job).steps[self.job(job).step_index(step)]
        target.status_value = Status.IN_PROGRESS.value
        target.started_at = occurred_at

    @event("StepFinished")
    def _step_finished(
        self,
        job: str,
        step: str,
        status: str,
        error: dict[str, Any] | None,
        downgraded: bool,
        occurred_at: datetime,
    ) -> None:
        target = self.job(job).steps[self.job(job).step_index(step)]
        target.status_value = status
        target.error = error
        target.downgraded = downgraded
        target.finished_at = occurred_at

    @event("JobBackedOff")
    def _job_backed_off(
        self,
        job: str,
        attempt: int,
        retry_at: datetime | None,
        error: dict[str, Any] | None,
        reset_steps: list[str],
        occurred_at: datetime,
    ) -> None:
        target = self.job(job)
        target.status_value = Status.BACKED_OFF.value
        target.retry_at = retry_at
        target.error = error
        for step in target.steps:
            if step.key in reset_steps:
                step.status_value = Status.PENDING.value
                step.started_at = step.finished_at = step.error = None
                step.downgraded = False

    @event("JobFinished")
    def _job_finished(
        self,
        job: str,
        status: str,
        reason: str | None,
        error: dict[str, Any] | None,
        closed_steps: dict[str, str],
        occurred_at: datetime,
    ) -> None:
        target = self.job(job)
        target.status_value = status
        target.reason = reason
        if error is not None:
            target.error = error
        target.finished_at = occurred_at
        target.retry_at = None
        for step in target.steps:
            if step.key in closed_steps:
                step.status_value = closed_steps[step.key]
                step.finished_at = occurred_at

    @event("TaskCancelRequested")
    def _cancel_requested(self, reason: str | None, occurred_at: datetime) -> None:
        self.cancel_requested = True
        self.cancel_reason = reason

    @event("TaskTimedOut")
    def _timed_out(self, deadline: datetime, occurred_at: datetime) -> None:
        self.hard_timed_out = True

    @event("TaskStatusChanged")
    def _status_changed(self, status: str, occurred_at: datetime) -> None:
        self.status_value = status

    @event("TaskFinished")
    def _finished(
        self,
        status: str,
        failure: dict[str, Any] | None,
        finished_at: datetime,
        occurred_at: datetime,
    ) -> None:
        self.status_value = status
        self.failure = failure
        self.finished_at = finished_at

    @event("TaskRerun")
    def _rerun(self, rerun_task_id: UUID, forced: bool, occurred_at: datetime) -> None:
        self.reruns.append(rerun_task_id)
