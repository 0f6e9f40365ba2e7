"""Per-step log totals on a task view, without reading a byte of any log's text.

Each event of a log carries the log's running totals, so one indexed read of a
step's last event answers for the whole log. Steps of a job that never started
have no log and cost nothing. The totals are the log's now: a view of the task
as of a past moment or version leaves them null (they are not replayed).
"""

from __future__ import annotations

from typing import Any

from domain.log_application import StepLogs


def with_log_totals(task: dict[str, Any], logs: StepLogs) -> dict[str, Any]:
    """The task view with `log_chunks`, `log_bytes` and `log_refused_bytes` on each step."""
    jobs = []
    for job in task["jobs"]:
        steps = []
        for step in job["steps"]:
            if job["attempt"]:
                totals = logs.totals(task["id"], job["key"], step["key"])
                counts = (totals.chunks, totals.bytes, totals.refused_bytes)
            else:
                counts = (0, 0, 0)
            steps.append(
                {
                    **step,
                    "log_chunks": counts[0],
                    "log_bytes": counts[1],
                    "log_refused_bytes": counts[2],
                }
            )
        jobs.append({**job, "steps": steps})
    return {**task, "jobs": jobs}
