"""The ten statuses and the task status derivation (domain.md, "Statuses")."""

from __future__ import annotations

import pytest

from domain.status import Status, derive_task_status

S = Status
ALL = list(Status)


def derive(
    *jobs: Status,
    queued: bool = True,
    started: bool = True,
    cancel_requested: bool = False,
    hard_timed_out: bool = False,
) -> Status:
    return derive_task_status(
        queued=queued,
        started=started,
        cancel_requested=cancel_requested,
        hard_timed_out=hard_timed_out,
        job_statuses=jobs,
    )


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (S.PENDING, False),
        (S.QUEUED, False),
        (S.IN_PROGRESS, False),
        (S.BACKED_OFF, False),
        (S.CANCELING, False),
        (S.DONE, True),
        (S.DONE_WITH_WARNINGS, True),
        (S.FAILED, True),
        (S.TIMED_OUT, True),
        (S.CANCELED, True),
    ],
)
def test_terminal_statuses_are_the_five_documented_outcomes(status: Status, terminal: bool) -> None:
    assert status.is_terminal is terminal


@pytest.mark.parametrize("status", ALL)
def test_only_done_and_done_with_warnings_count_as_success(status: Status) -> None:
    assert status.is_success is (status in {S.DONE, S.DONE_WITH_WARNINGS})


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (S.IN_PROGRESS, "in progress"),
        (S.DONE_WITH_WARNINGS, "done with warnings"),
        (S.QUEUED, "queued"),
    ],
)
def test_display_label_reads_as_words(status: Status, label: str) -> None:
    assert status.label == label


def test_machine_values_are_the_documented_ten() -> None:
    assert [s.value for s in Status] == [
        "pending",
        "queued",
        "in_progress",
        "backed_off",
        "canceling",
        "done",
        "done_with_warnings",
        "failed",
        "timed_out",
        "canceled",
    ]


# Each row: the rule of domain.md it exercises, the inputs, the derived status.
DERIVATION = [
    # 1. The hard timeout wins over everything, even an all-done or canceling task.
    ("1 timeout over running", dict(hard_timed_out=True), [S.IN_PROGRESS], S.TIMED_OUT),
    ("1 timeout over all done", dict(hard_timed_out=True), [S.DONE, S.DONE], S.TIMED_OUT),
    (
        "1 timeout over cancel",
        dict(hard_timed_out=True, cancel_requested=True),
        [S.CANCELED],
        S.TIMED_OUT,
    ),
    # 2. Every job terminal: cancel requested, then failed > timed_out > canceled > warnings.
    ("2 cancel over failed", dict(cancel_requested=True), [S.FAILED, S.DONE], S.CANCELED),
    ("2 cancel over all done", dict(cancel_requested=True), [S.DONE, S.DONE], S.CANCELED),
    ("2 failed over timed out", {}, [S.TIMED_OUT, S.FAILED, S.CANCELED], S.FAILED),
    ("2 timed out over canceled", {}, [S.CANCELED, S.TIMED_OUT, S.DONE], S.TIMED_OUT),
    ("2 canceled over warnings", {}, [S.DONE_WITH_WARNINGS, S.CANCELED], S.CANCELED),
    ("2 warnings over done", {}, [S.DONE, S.DONE_WITH_WARNINGS], S.DONE_WITH_WARNINGS),
    ("2 all done", {}, [S.DONE, S.DONE], S.DONE),
    ("2 terminal before started", dict(started=False), [S.FAILED], S.FAILED),
    # 3. Cancellation requested while something is not terminal.
    ("3 canceling", dict(cancel_requested=True), [S.IN_PROGRESS, S.CANCELED], S.CANCELING),
    (
        "3 canceling before start",
        dict(cancel_requested=True, started=False),
        [S.QUEUED],
        S.CANCELING,
    ),
    # 4. Nothing has started: queued once queued, pending before.
    ("4 queued", dict(started=False), [S.QUEUED, S.PENDING], S.QUEUED),
    ("4 pending", dict(started=False, queued=False), [S.PENDING, S.PENDING], S.PENDING),
    ("4 one job failed early", dict(started=False), [S.FAILED, S.QUEUED], S.QUEUED),
    # 5. Any job in progress.
    ("5 in progress over backed off", {}, [S.BACKED_OFF, S.IN_PROGRESS], S.IN_PROGRESS),
    ("5 in progress beside failed", {}, [S.FAILED, S.IN_PROGRESS], S.IN_PROGRESS),
    # 6. Otherwise any job backed off.
    ("6 backed off", {}, [S.BACKED_OFF, S.DONE, S.PENDING], S.BACKED_OFF),
    # 7. Work has started and the next job waits.
    ("7 next job queued", {}, [S.DONE, S.QUEUED], S.IN_PROGRESS),
    ("7 next job pending", {}, [S.DONE, S.PENDING], S.IN_PROGRESS),
]


@pytest.mark.parametrize(
    ("flags", "jobs", "expected"),
    [row[1:] for row in DERIVATION],
    ids=[row[0] for row in DERIVATION],
)
def test_task_status_is_derived_from_jobs_in_documented_order(
    flags: dict[str, bool], jobs: list[Status], expected: Status
) -> None:
    assert derive(*jobs, **flags) is expected


@pytest.mark.parametrize("outcome", [S.DONE, S.DONE_WITH_WARNINGS, S.FAILED, S.TIMED_OUT])
def test_cancel_requested_makes_any_finished_task_canceled(outcome: Status) -> None:
    assert derive(outcome, cancel_requested=True) is S.CANCELED


@pytest.mark.parametrize("status", [s for s in ALL if not s.is_terminal])
def test_one_unfinished_job_keeps_the_task_unfinished(status: Status) -> None:
    assert not derive(S.DONE, status).is_terminal
