"""Builders shared by the application tests: actors, plans, reported transitions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.application import TaskLedger, Written
from domain.context import acting_as
from domain.plan import JobPlan, StepPlan
from domain.status import Status
from domain.work import Transition

ALICE = {"id": "u-alice", "name": "Alice", "kind": "user"}
WODBOT = {"id": "bot-wodbot", "name": "Wodbot", "kind": "system"}
EXECUTOR = {"id": "key-executor", "name": "Executor", "kind": "system"}


def job(key: str, *steps: str, needs: Sequence[str] = (), system: bool = False) -> JobPlan:
    """A job with the given steps (by key), in order."""
    return JobPlan(
        key=key,
        name=key.replace("-", " ").title(),
        steps=tuple(StepPlan(s, s.replace("-", " ").title()) for s in steps),
        needs=tuple(needs),
        system=system,
    )


def create_executable(ledger: TaskLedger, *jobs: JobPlan, org: str = "acme", **fields: Any) -> UUID:
    """Records an executable task (as Alice) and returns its id."""
    with acting_as(ALICE):
        written = ledger.create_task(
            org=org,
            type=fields.pop("type", "app.deploy"),
            title=fields.pop("title", "Deploy shop"),
            kind="executable",
            author=ALICE,
            jobs=jobs,
            **fields,
        )
    task_id: UUID = written.task["id"]
    return task_id


def create_immediate(ledger: TaskLedger, *, org: str = "acme", **fields: Any) -> Written:
    with acting_as(ALICE):
        return ledger.create_task(
            org=org,
            type=fields.pop("type", "project.member.add"),
            title=fields.pop("title", "Add Bob to shop"),
            kind="immediate",
            author=ALICE,
            **fields,
        )


def queued() -> Transition:
    return Transition(Status.QUEUED)


def start(job_key: str, step_key: str | None = None, at: datetime | None = None) -> Transition:
    return Transition(Status.IN_PROGRESS, job=job_key, step=step_key, at=at)


def finish(
    job_key: str,
    step_key: str,
    status: Status = Status.DONE,
    error: dict[str, Any] | None = None,
) -> Transition:
    return Transition(status, job=job_key, step=step_key, error=error)


def stop(job_key: str, status: Status = Status.CANCELED) -> Transition:
    """The executor ending a job itself: canceled (default), failed or timed out."""
    return Transition(status, job=job_key)


def run_step(job_key: str, step_key: str, status: Status = Status.DONE) -> list[Transition]:
    """A step starting and finishing, reported as one list."""
    return [start(job_key, step_key), finish(job_key, step_key, status)]


def report(ledger: TaskLedger, task_id: UUID, *transitions: Transition) -> Written:
    """Reports transitions as the executor."""
    with acting_as(EXECUTOR):
        return ledger.report(task_id, transitions)


@contextmanager
def as_executor() -> Iterator[None]:
    with acting_as(EXECUTOR):
        yield


def without_durations(view: Any) -> Any:
    """A view without its clock-dependent durations."""
    if isinstance(view, dict):
        return {k: without_durations(v) for k, v in view.items() if k != "duration_seconds"}
    if isinstance(view, list):
        return [without_durations(v) for v in view]
    return view


def event_types(ledger: TaskLedger, task_id: UUID) -> list[str]:
    return [e["type"] for e in ledger.timeline(task_id)]


def statuses(view: dict[str, Any]) -> dict[str, Any]:
    """Job and step statuses of a task view, as {job: (status, {step: status})}."""
    return {
        j["key"]: (j["status"], {s["key"]: s["status"] for s in j["steps"]}) for j in view["jobs"]
    }
