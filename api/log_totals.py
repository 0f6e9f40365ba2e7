"""Per-step log totals on a task view, without reading a byte of any log's text.

Each event of a log carries the log's running totals, so the last event of each
step's log answers for the whole log: one query reads them for every step. Steps
of a job that never started have no log and cost nothing. The totals are the log's
now: a view of the task as of a past moment or version leaves them null.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from uuid import UUID

from domain.log_application import StepLogs
from domain.logs import LogTotals, log_stream_id
from projections.log_heads import latest_events


def with_log_totals(task: dict[str, Any], logs: StepLogs) -> dict[str, Any]:
    """The task view with `log_chunks`, `log_bytes` and `log_refused_bytes` on each step."""
    stream_ids = {
        (job["key"], step["key"]): _stream_id(task["id"], job["key"], step["key"])
        for job in task["jobs"]
        if job["attempt"]
        for step in job["steps"]
    }
    heads = latest_events(logs.recorder, list(stream_ids.values()))
    jobs = []
    for job in task["jobs"]:
        steps = []
        for step in job["steps"]:
            head = heads.get(stream_ids.get((job["key"], step["key"])))  # type: ignore[arg-type]
            totals = LogTotals.after(logs.mapper.to_domain_event(head) if head else None)  # type: ignore[arg-type]
            steps.append(
                {
                    **step,
                    "log_chunks": totals.chunks,
                    "log_bytes": totals.bytes,
                    "log_refused_bytes": totals.refused_bytes,
                }
            )
        jobs.append({**job, "steps": steps})
    return {**task, "jobs": jobs}


# A uuid5 (a SHA-1) per step was a fifth of a task read; a plan never changes, so the
# ids of recently read tasks are kept (about 10,000 steps: a few MB at most).
@lru_cache(maxsize=10_000)
def _stream_id(task_id: UUID, job: str, step: str) -> UUID:
    return log_stream_id(task_id, job, step)
