"""Which step a log request is about, as the task ledger sees it now, and who may see it.

The task is read from the ledger (strongly consistent), so a log write is judged on
every acknowledged transition. A step the caller may not see is answered exactly as
a step that does not exist: system steps (and the steps of system jobs) are hidden
from readers, as on the task itself, unless an auditor or admin asks with
`include_system=true`. Writers append to system steps: executors run them.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends

from api.deps import Principal, ServicesDep
from api.errors import ProblemError
from domain.application import TaskLedger
from domain.log_application import StepLogs
from domain.logs import LoggedStep


def get_logs(services: ServicesDep) -> StepLogs:
    return services.logs


LogsDep = Annotated[StepLogs, Depends(get_logs)]


def logged_step(
    ledger: TaskLedger,
    task_id: UUID,
    job: str,
    step: str,
    principal: Principal,
    *,
    include_system: bool,
) -> LoggedStep:
    """The step's facts for its log; 404 when the task, job or step is unknown or hidden."""
    task = ledger.get_task(task_id, org=principal.org)
    job_view, step_view = _find(task, job, step)
    if job_view is None or step_view is None:
        raise _no_such_step(job, step)
    if (job_view["system"] or step_view["system"]) and not include_system:
        raise _no_such_step(job, step)
    return LoggedStep(
        task_id=task_id,
        job=job,
        step=step,
        status=step_view["status"],
        has_run=_has_run(ledger, task_id, principal.org, job_view, step_view),
    )


def step_status(ledger: TaskLedger, target: LoggedStep, org: str) -> str:
    """The step's status now (a live log stops following once it is terminal)."""
    _, step_view = _find(ledger.get_task(target.task_id, org=org), target.job, target.step)
    assert step_view is not None  # a plan never loses a step
    return str(step_view["status"])


def _find(
    task: dict[str, Any], job: str, step: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    job_view = next((j for j in task["jobs"] if j["key"] == job), None)
    if job_view is None:
        return None, None
    return job_view, next((s for s in job_view["steps"] if s["key"] == step), None)


def _has_run(
    ledger: TaskLedger, task_id: UUID, org: str, job: dict[str, Any], step: dict[str, Any]
) -> bool:
    """Whether the step ever started, in any attempt of its job.

    A job that backed off put its steps back to `pending` (no `started_at`), yet the
    late logs of the attempt that ran must still be accepted: only then is the task's
    history read, to find the step's `StepStarted`. A job that never started
    (attempt 0) cannot have a step that did.
    """
    if step["started_at"] is not None:
        return True
    if not job["attempt"]:
        return False
    return any(
        event["type"] == "StepStarted"
        and event["data"].get("job") == job["key"]
        and event["data"].get("step") == step["key"]
        for event in ledger.timeline(task_id, org=org)
    )


def _no_such_step(job: str, step: str) -> ProblemError:
    return ProblemError(404, "Not found", f"the task has no step {step!r} in a job {job!r}")
