"""What each reader may see: system jobs and steps only for auditors and admins who ask.

Regular readers still see that a task failed for an internal reason ("contact
support"), never which system job or step, nor its error.
"""

from __future__ import annotations

import copy
from typing import Any

INTERNAL_REASON = "internal error"


def _system_steps(task: dict[str, Any]) -> dict[str, set[str]]:
    return {job["key"]: {s["key"] for s in job["steps"] if s["system"]} for job in task["jobs"]}


def visible_failure(failure: Any, include_system: bool) -> Any:
    """A task's failure as a reader sees it: for a system failure, only that it was one."""
    if include_system or not isinstance(failure, dict) or failure.get("reason") != "system":
        return failure
    return {"reason": "system", "message": failure["message"]}


def visible_task(task: dict[str, Any], include_system: bool) -> dict[str, Any]:
    """The task view as a reader sees it."""
    if include_system:
        return task
    shown = copy.copy(task)
    system_jobs = {j["key"] for j in task["jobs"] if j["system"]}
    system_steps = _system_steps(task)
    shown["failure"] = visible_failure(task.get("failure"), include_system)
    jobs = []
    for job in task["jobs"]:
        if job["system"]:
            continue
        job = dict(job)
        job["needs"] = [n for n in job["needs"] if n not in system_jobs]
        if any(str(job.get("reason") or "").startswith(f"need {j} ") for j in system_jobs):
            job["reason"] = "a need could not complete"
        hidden = system_steps.get(job["key"], set())
        if hidden:
            failed_in_system_step = any(
                s["key"] in hidden and s["status"] in ("failed", "timed_out") for s in job["steps"]
            )
            job["steps"] = [s for s in job["steps"] if s["key"] not in hidden]
            if failed_in_system_step:
                job["error"] = None
                job["reason"] = INTERNAL_REASON
        jobs.append(job)
    shown["jobs"] = jobs
    return shown


def visible_event(
    event: dict[str, Any], task: dict[str, Any], include_system: bool
) -> dict[str, Any] | None:
    """A timeline entry as a reader sees it; None when the whole event is about system work."""
    if include_system:
        return event
    data = event["data"]
    system_jobs = {j["key"] for j in task["jobs"] if j["system"]}
    system_steps = _system_steps(task)
    job = data.get("job")
    if job in system_jobs:
        return None
    if job is not None and data.get("step") in system_steps.get(job, set()):
        return None
    shown = dict(event)
    shown_data = dict(data)
    if "jobs" in shown_data:  # TaskCreated carries the whole plan
        shown_data["jobs"] = [
            {
                **j,
                "needs": [n for n in j.get("needs", []) if n not in system_jobs],
                "steps": [s for s in j.get("steps", []) if not s.get("system")],
            }
            for j in shown_data["jobs"]
            if not j.get("system")
        ]
    if isinstance(shown_data.get("closed_steps"), dict) and job is not None:
        hidden = system_steps.get(job, set())
        shown_data["closed_steps"] = {
            k: v for k, v in shown_data["closed_steps"].items() if k not in hidden
        }
    reason = shown_data.get("reason")
    if job is not None and isinstance(reason, str):
        hidden_steps = system_steps.get(job, set())
        if any(reason.startswith(f"step {s} ") for s in hidden_steps):
            shown_data["reason"] = INTERNAL_REASON
            shown_data["error"] = None
        if any(reason.startswith(f"need {j} ") for j in system_jobs):
            shown_data["reason"] = "a need could not complete"
    if "failure" in shown_data:
        shown_data["failure"] = visible_failure(shown_data["failure"], include_system)
    shown["data"] = shown_data
    return shown
