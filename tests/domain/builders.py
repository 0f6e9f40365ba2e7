"""Builders for the domain tests: plans, tasks, reported transitions, replays.

Every clock is fixed and timezone-aware, so no test depends on when it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol

from domain.plan import JobPlan, StepPlan
from domain.status import Status
from domain.task import Task
from domain.work import Transition

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TASK_ID = UUID("00000000-0000-4000-8000-000000000001")
ORIGIN_ID = UUID("00000000-0000-4000-8000-0000000000aa")
USER = {"id": "u-1", "name": "Alice", "kind": "user"}
EXECUTOR = {"id": "runner-1", "name": "Wodbot", "kind": "system"}


def at(seconds: float) -> datetime:
    """The fixed clock, `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def job(
    key: str, *steps: str | StepPlan, needs: Iterable[str] = (), system: bool = False
) -> JobPlan:
    return JobPlan(
        key=key,
        name=key.title(),
        steps=tuple(s if isinstance(s, StepPlan) else StepPlan(s, s.title()) for s in steps),
        needs=tuple(needs),
        system=system,
    )


# build (clone → compile) and lint (check) run in parallel; deploy (push) needs build;
# notify (send) needs deploy.
PIPELINE = (
    job("build", "clone", "compile"),
    job("lint", "check"),
    job("deploy", "push", needs=["build"]),
    job("notify", "send", needs=["deploy"]),
)


def executable(*jobs: JobPlan, now: datetime = T0, **fields: Any) -> Task:
    """A new executable task; the pipeline above unless jobs are given."""
    defaults: dict[str, Any] = {
        "task_id": TASK_ID,
        "org": "acme",
        "type": "app.deploy",
        "title": "Deploy shop",
        "kind": "executable",
        "author": USER,
    }
    return Task.create(now=now, jobs=jobs or PIPELINE, **(defaults | fields))


def immediate(**fields: Any) -> Task:
    defaults: dict[str, Any] = {
        "task_id": TASK_ID,
        "org": "acme",
        "type": "project.member.add",
        "title": "Add Bob to shop",
        "kind": "immediate",
        "author": USER,
    }
    return Task.create(now=T0, **(defaults | fields))


def to(
    status: Status | str, job: str | None = None, step: str | None = None, **kw: Any
) -> Transition:
    """One reported transition: of the task, of a job, or of a step of a job."""
    return Transition(Status(status), job, step, **kw)


def report(task: Task, *transitions: Transition, now: datetime = T0) -> list[Any]:
    """Reports the transitions and returns the events they triggered (still pending)."""
    earlier = len(task.pending_events)
    task.report(transitions, now)
    return list(task.pending_events[earlier:])


def run_steps(task: Task, job_key: str, *steps: str, status: str = "done") -> None:
    """Runs the named steps of a job one after the other to `status`."""
    for key in steps:
        report(task, to("in_progress", job_key, key), to(status, job_key, key))


def names(events: Iterable[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def named(events: Iterable[Any], name: str) -> list[Any]:
    return [e for e in events if type(e).__name__ == name]


def replay(events: Iterable[DomainEventProtocol[UUID]]) -> Task:
    """A fresh aggregate rebuilt from the events alone, as the repository does."""
    task: Any = None
    for e in events:
        task = e.mutate(task)
    assert isinstance(task, Task)
    return task


def statuses(task: Task) -> dict[str, str]:
    """Job and step statuses as `{"build": ..., "build.clone": ...}`: a compact picture."""
    picture: dict[str, str] = {}
    for j in task.jobs:
        picture[j.key] = j.status.value
        for s in j.steps:
            picture[f"{j.key}.{s.key}"] = s.status.value
    return picture


def task_in_status(status: Status | str, **fields: Any) -> Task:
    """A one-job, one-step task (`a.s`, timeout 60 s) brought to the given task status."""
    status = Status(status)
    task = executable(job("a", "s"), timeout_seconds=60, **fields)
    if status == Status.QUEUED:
        report(task, to("queued"))
    elif status == Status.CANCELED:
        task.request_cancel(None, at(1))
    elif status != Status.PENDING:
        report(task, to("in_progress", "a", "s"))
        if status == Status.BACKED_OFF:
            report(task, to("backed_off", "a", retry_at=at(30)))
        elif status == Status.CANCELING:
            task.request_cancel(None, at(1))
        elif status == Status.TIMED_OUT:
            task.time_out(at(60))
        elif status.is_terminal:
            report(task, to(status, "a", "s"))
    assert task.status == status
    task.collect_events()
    return task
