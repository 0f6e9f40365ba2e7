"""The ten statuses, which are terminal, and the task status derivation.

Everything here is pure: no aggregate, no events, so the rules can be read and
tested as tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    BACKED_OFF = "backed_off"
    CANCELING = "canceling"
    DONE = "done"
    DONE_WITH_WARNINGS = "done_with_warnings"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_success(self) -> bool:
        return self in SUCCESSFUL

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


TERMINAL = frozenset(
    {Status.DONE, Status.DONE_WITH_WARNINGS, Status.FAILED, Status.TIMED_OUT, Status.CANCELED}
)
SUCCESSFUL = frozenset({Status.DONE, Status.DONE_WITH_WARNINGS})
# A need that ends in one of these can never be satisfied: its dependants are canceled.
UNSATISFIABLE = frozenset({Status.FAILED, Status.TIMED_OUT, Status.CANCELED})
# Statuses a rerun may start from.
RERUNNABLE = frozenset({Status.FAILED, Status.TIMED_OUT, Status.CANCELED})

# Which step statuses an executor may report, from which current status.
STEP_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.IN_PROGRESS, Status.CANCELED, Status.TIMED_OUT}),
    Status.IN_PROGRESS: frozenset(
        {
            Status.DONE,
            Status.DONE_WITH_WARNINGS,
            Status.FAILED,
            Status.CANCELED,
            Status.TIMED_OUT,
        }
    ),
}

# Which job statuses an executor may report, from which current status. Jobs
# finish `done`/`done_with_warnings` by themselves, from their steps.
JOB_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset(
        {Status.IN_PROGRESS, Status.FAILED, Status.CANCELED, Status.TIMED_OUT}
    ),
    Status.QUEUED: frozenset(
        {Status.IN_PROGRESS, Status.FAILED, Status.CANCELED, Status.TIMED_OUT}
    ),
    Status.IN_PROGRESS: frozenset(
        {Status.BACKED_OFF, Status.FAILED, Status.CANCELED, Status.TIMED_OUT}
    ),
    Status.BACKED_OFF: frozenset(
        {Status.IN_PROGRESS, Status.FAILED, Status.CANCELED, Status.TIMED_OUT}
    ),
}


def derive_task_status(
    *,
    queued: bool,
    started: bool,
    cancel_requested: bool,
    hard_timed_out: bool,
    job_statuses: Iterable[Status],
) -> Status:
    """The status of an executable task, derived from its jobs (domain.md, in order)."""
    statuses = list(job_statuses)
    if hard_timed_out:
        return Status.TIMED_OUT
    if statuses and all(s.is_terminal for s in statuses):
        if cancel_requested:
            return Status.CANCELED
        for outcome in (
            Status.FAILED,
            Status.TIMED_OUT,
            Status.CANCELED,
            Status.DONE_WITH_WARNINGS,
        ):
            if outcome in statuses:
                return outcome
        return Status.DONE
    if cancel_requested:
        return Status.CANCELING
    if not started:
        return Status.QUEUED if queued else Status.PENDING
    if Status.IN_PROGRESS in statuses:
        return Status.IN_PROGRESS
    if Status.BACKED_OFF in statuses:
        return Status.BACKED_OFF
    return Status.IN_PROGRESS
