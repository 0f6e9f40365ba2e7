"""Invariants of the task model under random plans and random command sequences.

Hypothesis draws small DAGs (1-5 jobs of 1-3 steps) and sequences of reports (legal
or not), retries, cancels, hard timeouts and reruns. The first property drives the
aggregate alone: each command runs on a fresh copy that is kept only if the command
was accepted (a refused `report` may have applied its earlier items to that copy
before raising). The second drives the same commands through the task ledger, where
a refused command must leave the stored task exactly as it was.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.application import TaskLedger
from domain.context import acting_as
from domain.errors import DomainError, TransitionRefusedError, UnknownTargetError
from domain.plan import JobPlan
from domain.status import UNSATISFIABLE, Status, derive_task_status
from domain.task import Task
from domain.work import Transition
from store.config import StoreConfig
from tests.domain.builders import EXECUTOR, T0, USER, executable, job, replay

TIMEOUT_SECONDS = 60
GHOST = "ghost"  # a key no plan has


@st.composite
def plans(draw: st.DrawFn) -> tuple[JobPlan, ...]:
    """1-5 jobs of 1-3 steps; each job may need up to two earlier jobs (so no cycles)."""
    jobs = []
    for i in range(draw(st.integers(1, 5))):
        needs = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=2)) if i else []
        steps = [f"s{k}" for k in range(draw(st.integers(1, 3)))]
        jobs.append(
            job(f"j{i}", *steps, needs=[f"j{k}" for k in needs], system=draw(st.booleans()))
        )
    return tuple(jobs)


ERRORS = st.sampled_from(
    [None, {"message": "boom"}, {"message": "lint warnings", "user_facing": True}]
)


@dataclass(frozen=True)
class Report:
    """Raw transitions: (job index or None, step index or None, status, error, at offset)."""

    items: tuple[tuple[int | None, int | None, Status, Any, int | None], ...]


@dataclass(frozen=True)
class Advance:
    """Moves a job's next step along: pending → in_progress, in_progress → `outcome`."""

    job: int
    outcome: Status


@dataclass(frozen=True)
class BackOff:
    """The executor reports a job's attempt failed, to be retried in 30 s."""

    job: int


@dataclass(frozen=True)
class AdvanceThenReport:
    """One list: a legal move first, then raw transitions that may well be refused.

    What makes a refusal come after a change: a `report` that raises has already
    applied its earlier items, which its caller must then throw away.
    """

    first: Advance
    then: Report


# Every command that is a list of reported transitions.
Reporting = Report | Advance | BackOff | AdvanceThenReport


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class TimeOut:
    pass


@dataclass(frozen=True)
class Rerun:
    force: bool


# Job and step indexes wrap around the plan; -1 names a job or step the plan lacks.
raw_transition = st.tuples(
    st.one_of(st.none(), st.integers(-1, 4)),
    st.one_of(st.none(), st.integers(-1, 2)),
    st.sampled_from(list(Status)),
    ERRORS,
    st.one_of(st.none(), st.integers(-5, 5)),  # the reporter's clock, off the service's
)
advance = st.builds(
    Advance,
    st.integers(0, 4),
    st.sampled_from(
        [
            Status.DONE,
            Status.DONE,  # twice as likely as each other outcome
            Status.DONE_WITH_WARNINGS,
            Status.FAILED,
            Status.CANCELED,
            Status.TIMED_OUT,
        ]
    ),
)
report = st.builds(Report, st.lists(raw_transition, min_size=1, max_size=3).map(tuple))
# Mostly work moving forward (the roll picks the kind of command), with random reports
# (alone, or after a legal move in the same list), retries, and now and then a cancel,
# a hard timeout or a rerun.
command = st.integers(0, 99).flatmap(
    lambda roll: (
        advance if roll < 60
        else st.builds(AdvanceThenReport, advance, report) if roll < 70
        else report if roll < 85
        else st.builds(BackOff, st.integers(0, 4)) if roll < 92
        else st.just(Cancel()) if roll < 95
        else st.just(TimeOut()) if roll < 98
        else st.builds(Rerun, st.booleans())
    )
)  # fmt: skip
commands = st.lists(st.tuples(st.integers(0, 10), command), min_size=10, max_size=60)


def transitions_of(task: Task, command: Reporting, now: datetime) -> list[Transition]:
    if isinstance(command, AdvanceThenReport):
        return transitions_of(task, command.first, now) + transitions_of(task, command.then, now)
    if isinstance(command, BackOff):
        key = task.jobs[command.job % len(task.jobs)].key
        return [Transition(Status.BACKED_OFF, key, retry_at=now + timedelta(seconds=30))]
    if isinstance(command, Advance):
        target = task.jobs[command.job % len(task.jobs)]
        step = next((s for s in target.steps if not s.status.is_success), target.steps[-1])
        status = Status.IN_PROGRESS if step.status == Status.PENDING else command.outcome
        return [Transition(status, target.key, step.key, error={"message": "x"})]
    found = []
    for job_index, step_index, status, error, offset in command.items:
        key = step_key = None
        if job_index is not None:
            key = GHOST if job_index < 0 else task.jobs[job_index % len(task.jobs)].key
        if step_index is not None:
            steps = task.job(key).steps if key not in (None, GHOST) else []
            step_key = GHOST if step_index < 0 or not steps else steps[step_index % len(steps)].key
        moment = None if offset is None else now + timedelta(seconds=offset)
        found.append(Transition(status, key, step_key, at=moment, error=error))
    return found


def execute(
    task: Task, command: object, now: datetime, rerun_id: UUID | None = None
) -> Task | None:
    """Runs one command on `task`; returns the new task of a rerun."""
    if isinstance(command, Reporting):
        task.report(transitions_of(task, command, now), now)
    elif isinstance(command, Cancel):
        task.request_cancel("stop", now)
    elif isinstance(command, TimeOut):
        task.time_out(now)
    elif isinstance(command, Rerun):
        return task.rerun(
            new_task_id=rerun_id or UUID(int=now.second + 1),
            author=USER,
            force=command.force,
            now=now,
        )
    return None


def execute_on_ledger(
    ledger: TaskLedger, task: Task, command: object, now: datetime, rerun_id: UUID
) -> None:
    """Runs one command through the ledger, as the API would; `task` is the stored task."""
    if isinstance(command, Reporting):
        ledger.report(task.id, transitions_of(task, command, now))
    elif isinstance(command, Cancel):
        ledger.cancel(task.id, "stop")
    elif isinstance(command, TimeOut):
        ledger.time_out(task.id, now=now)
    elif isinstance(command, Rerun):
        ledger.rerun(task.id, author=USER, force=command.force, new_task_id=rerun_id)


def comparable(task: Task, *, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """A task's state without the bookkeeping that differs between two runs of a command."""
    # head_hash covers each event's recorded time, which differs between two runs.
    skip = {"_pending_events", "_modified_on", "head_hash", *ignore}
    return {k: v for k, v in vars(task).items() if k not in skip}


def assert_consistent(task: Task) -> None:
    """What must hold of any task after any accepted command."""
    # The task's status is the documented derivation from its jobs.
    assert task.status == derive_task_status(
        queued=task.queued_at is not None,
        started=task.started_at is not None,
        cancel_requested=task.cancel_requested,
        hard_timed_out=task.hard_timed_out,
        job_statuses=[j.status for j in task.jobs],
    )
    assert (task.finished_at is not None) == task.is_terminal
    assert (task.started_at is not None) == any(j.attempt > 0 for j in task.jobs)
    if task.started_at is not None:
        assert task.queued_at is not None
    if task.is_terminal:
        assert all(j.status.is_terminal for j in task.jobs)
    if task.hard_timed_out:
        assert task.status == Status.TIMED_OUT
        assert task.failure is not None and task.failure["reason"] == "timeout"
    if task.status == Status.FAILED:
        assert task.failure is not None and task.failure["reason"] in ("job", "system")
    if task.status == Status.CANCELING:
        # Nothing waits to start while cancellation is requested.
        assert not any(
            j.status in (Status.PENDING, Status.QUEUED, Status.BACKED_OFF) for j in task.jobs
        )
    for j in task.jobs:
        needs = [task.job(n) for n in j.needs]
        if j.attempt > 0:
            assert all(n.status.is_success for n in needs), f"{j.key} ran before its needs"
        if any(n.status in UNSATISFIABLE for n in needs):
            assert j.status.is_terminal, f"{j.key} still waits on a need that failed"
        if j.status == Status.QUEUED:
            assert all(n.status.is_success for n in needs)
        if j.status.is_terminal:
            assert all(s.status.is_terminal for s in j.steps)
        # A job finishes by itself from its steps.
        if any(s.status in UNSATISFIABLE for s in j.steps):
            assert j.status in UNSATISFIABLE
        if all(s.status.is_success for s in j.steps):
            warned = any(s.status == Status.DONE_WITH_WARNINGS for s in j.steps)
            assert j.status == (Status.DONE_WITH_WARNINGS if warned else Status.DONE)
        if j.status.is_success:
            assert all(s.status.is_success for s in j.steps)
        for s in j.steps:
            if s.downgraded:
                assert task.forced and s.status == Status.DONE_WITH_WARNINGS
        running = [s for s in j.steps if s.status == Status.IN_PROGRESS]
        assert len(running) <= 1
        if running or any(s.status.is_success for s in j.steps):
            assert j.attempt > 0
        for i, s in enumerate(j.steps):
            if s.status in (
                Status.IN_PROGRESS,
                Status.DONE,
                Status.DONE_WITH_WARNINGS,
                Status.FAILED,
            ):
                assert all(p.status.is_success for p in j.steps[:i]), (
                    f"{j.key}.{s.key} out of order"
                )


def assert_finished_things_unchanged(before: Task, after: Task, events: list[Any]) -> None:
    """Terminal steps, jobs and tasks never change (a retry resets a job's finished steps)."""
    retried = {e.job for e in events if type(e).__name__ == "JobBackedOff"}
    for old, new in zip(before.jobs, after.jobs, strict=True):
        if old.status.is_terminal:
            assert new == old
        for old_step, new_step in zip(old.steps, new.steps, strict=True):
            if old_step.status.is_terminal and new_step != old_step:
                assert old.key in retried and old_step.status.is_success
    if before.is_terminal:
        assert comparable(after, ignore=("_version", "reruns")) == comparable(
            before, ignore=("_version", "reruns")
        )
        assert after.reruns[: len(before.reruns)] == before.reruns


def assert_refusal_changed_nothing(
    before: Task, attempt: Task, command: object, now: datetime, refusal: DomainError
) -> None:
    """The refused command (or its refused item) triggered no event and changed nothing."""
    index = getattr(refusal, "index", None)
    if not isinstance(command, Reporting) or not index:
        assert attempt == before
        return
    # The items before the refused one applied as they would alone; the refused one added nothing.
    prefix = copy.deepcopy(before)
    prefix.report(transitions_of(before, command, now)[:index], now)
    assert comparable(attempt) == comparable(prefix)
    assert [type(e) for e in attempt.pending_events] == [type(e) for e in prefix.pending_events]


@settings(max_examples=200, deadline=None)
@given(plan=plans(), forced=st.booleans(), script=commands)
def test_random_commands_keep_every_invariant(
    plan: tuple[JobPlan, ...], forced: bool, script: list[tuple[int, object]]
) -> None:
    with acting_as(USER):
        task = executable(*plan, forced=forced, timeout_seconds=TIMEOUT_SECONDS)
    history = task.collect_events()
    replica = replay(history)
    now = T0

    for seconds, command in script:
        now += timedelta(seconds=seconds)
        before = copy.deepcopy(task)
        attempt = copy.deepcopy(task)
        try:
            with acting_as(EXECUTOR):
                new_task = execute(attempt, command, now)
        except DomainError as refusal:
            if isinstance(refusal, TransitionRefusedError | UnknownTargetError):
                assert refusal.index is not None
            assert_refusal_changed_nothing(before, attempt, command, now, refusal)
            # The attempt is discarded here; that the ledger discards it too is
            # `test_refused_commands_leave_the_stored_task_unchanged`.
            continue

        events = attempt.collect_events()
        assert all(e.actor == EXECUTOR and e.occurred_at.tzinfo for e in events)
        assert_finished_things_unchanged(before, attempt, events)
        assert_consistent(attempt)
        history += events
        for e in events:
            replica = e.mutate(replica)
        assert replica == attempt  # replay from the events equals the live state
        task = attempt
        if new_task is not None:
            assert new_task.rerun_of == task.id and new_task.status == Status.PENDING
            assert new_task.plan() == task.plan()
            assert replay(new_task.collect_events()) == new_task

    assert replay(history) == task


class Clock:
    """The ledger's clock, moved by the test: the service time of each command."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def stored(ledger: TaskLedger, task_id: UUID) -> Task:
    """The task as the ledger holds it now (what the next command and every read get)."""
    task: Task = ledger.repository.get(task_id)
    return task


@settings(max_examples=60, deadline=None)
@given(plan=plans(), forced=st.booleans(), script=commands)
def test_refused_commands_leave_the_stored_task_unchanged(
    plan: tuple[JobPlan, ...], forced: bool, script: list[tuple[int, object]]
) -> None:
    clock = Clock(T0)
    ledger = TaskLedger(StoreConfig.from_url("memory://").env(), clock=clock)
    try:
        with acting_as(USER):
            created = executable(*plan, forced=forced, timeout_seconds=TIMEOUT_SECONDS)
        # Forced tasks come only from reruns: the created task is saved as it is.
        model = copy.deepcopy(created)
        model.collect_events()
        ledger.save(created)

        for number, (seconds, command) in enumerate(script, start=1):
            clock.now += timedelta(seconds=seconds)
            rerun_id = UUID(int=number)
            before = stored(ledger, created.id)
            attempt = copy.deepcopy(model)
            try:
                with acting_as(EXECUTOR):
                    execute_on_ledger(ledger, before, command, clock.now, rerun_id)
            except DomainError:
                # Refused: nothing stored, nothing left half-applied for the next command.
                after = stored(ledger, created.id)
                assert after.version == before.version
                assert after == before
                # The aggregate alone refuses it too (the ledger adds no rule of its own).
                with acting_as(EXECUTOR), pytest.raises(DomainError):
                    execute(attempt, command, clock.now, rerun_id)
            else:
                # Accepted: the ledger stored exactly what the aggregate alone decides.
                with acting_as(EXECUTOR):
                    execute(attempt, command, clock.now, rerun_id)
                model = attempt
                model.collect_events()
                assert comparable(stored(ledger, created.id)) == comparable(model)

            # Replaying the stored events gives the state every read is answered from.
            assert replay(ledger.events.get(created.id)) == stored(ledger, created.id)
    finally:
        ledger.close()
