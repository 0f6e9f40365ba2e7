"""Plain-value views of aggregates and events: what queries hand to callers.

Callers (the API) decide what each reader may see; these views hold everything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.api_key import ApiKey
from domain.chain import event_data
from domain.task import Task
from domain.work import Job, Step


def duration_seconds(
    started_at: datetime | None, finished_at: datetime | None, now: datetime
) -> float | None:
    if started_at is None:
        return None
    end = finished_at or now
    return max(0.0, (end - started_at).total_seconds())


def step_view(step: Step, now: datetime) -> dict[str, Any]:
    return {
        "key": step.key,
        "name": step.name,
        "status": step.status.value,
        "system": step.system,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "duration_seconds": duration_seconds(step.started_at, step.finished_at, now),
        "error": step.error,
        "downgraded": step.downgraded,
    }


def job_view(job: Job, now: datetime) -> dict[str, Any]:
    return {
        "key": job.key,
        "name": job.name,
        "needs": list(job.needs),
        "status": job.status.value,
        "system": job.system,
        "attempt": job.attempt,
        "retry_at": job.retry_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "duration_seconds": duration_seconds(job.started_at, job.finished_at, now),
        "error": job.error,
        "reason": job.reason,
        "steps": [step_view(s, now) for s in job.steps],
    }


def task_view(task: Task, now: datetime) -> dict[str, Any]:
    return {
        "id": task.id,
        "org": task.org,
        "type": task.type,
        "title": task.title,
        "kind": task.kind,
        "status": task.status.value,
        "author": dict(task.author),
        "project": task.project,
        "origin_task_id": task.origin_task_id,
        "rerun_of": task.rerun_of,
        "reruns": list(task.reruns),
        "forced": task.forced,
        "silent": task.silent,
        "rerunnable": task.rerunnable,
        "timeout_seconds": task.timeout_seconds,
        "labels": dict(task.labels),
        "cancel_requested": task.cancel_requested,
        "cancel_reason": task.cancel_reason,
        "created_at": task.created_at,
        "queued_at": task.queued_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "duration_seconds": (
            None
            if task.kind == "immediate"
            else duration_seconds(task.started_at, task.finished_at, now)
        ),
        "failure": task.failure,
        "version": task.version,
        "jobs": [job_view(j, now) for j in task.jobs],
    }


def event_view(domain_event: Any) -> dict[str, Any]:
    """One stored event as a timeline entry (without its global position).

    `data` is in its JSON form already (times as RFC 3339 text, ids as text): exactly
    what the event's hash covers, so the entry a reader gets recomputes to `hash`.
    Events of other aggregates (API keys) are not chained: their hashes are None.
    """
    state = domain_event.__dict__
    return {
        "task_id": domain_event.originator_id,
        "version": domain_event.originator_version,
        "type": type(domain_event).__name__,
        "recorded_at": domain_event.timestamp,
        "occurred_at": state.get("occurred_at") or domain_event.timestamp,
        "actor": state.get("actor"),
        "request_id": state.get("request_id"),
        "data": event_data(state),
        "prev_hash": state.get("prev_hash"),
        "hash": state.get("hash"),
        # Whole here; a reader's copy without system work says so (api.presenters).
        "redacted": False,
    }


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "org": key.org,
        "role": key.role,
        "name": key.name,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }
