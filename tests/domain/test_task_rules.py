"""Every rule of the task model (domain.md), driven on the Task aggregate alone.

The default plan is the pipeline of `builders`: build (clone → compile) and lint
(check) in parallel, deploy (push) needing build, notify (send) needing deploy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from uuid import UUID

import pytest

from domain.context import SYSTEM_ACTOR, acting_as, command_scope
from domain.errors import (
    ConflictError,
    InvalidRequestError,
    TransitionRefusedError,
    UnknownTargetError,
)
from domain.plan import JobPlan, StepPlan
from domain.status import Status
from domain.task import DEFAULT_TIMEOUT_SECONDS, SYSTEM_FAILURE_MESSAGE, Task
from domain.work import Transition
from tests.domain.builders import (
    EXECUTOR,
    ORIGIN_ID,
    T0,
    TASK_ID,
    USER,
    at,
    executable,
    immediate,
    job,
    named,
    names,
    report,
    run_steps,
    statuses,
    task_in_status,
    to,
)

NEW_ID = UUID("00000000-0000-4000-8000-000000000002")
SUPPORT = {"id": "s-9", "name": "Sam", "kind": "support"}


def refused(task: Task, *transitions: Transition) -> TransitionRefusedError:
    with pytest.raises(TransitionRefusedError) as caught:
        task.report(transitions, at(100))
    return caught.value


def started() -> Task:
    """The pipeline with build's first step running."""
    task = executable()
    report(task, to("in_progress", "build", "clone"))
    return task


# ---------------------------------------------------------------- immediate tasks


def test_immediate_task_is_done_when_recorded() -> None:
    task = immediate()

    assert task.status == Status.DONE
    assert task.finished_at == T0
    assert task.jobs == []
    assert names(task.collect_events()) == ["TaskCreated"]


@pytest.mark.parametrize(
    "transition",
    [to("queued"), to("in_progress"), to("in_progress", "build"), to("done", "build", "clone")],
    ids=["task queued", "task in progress", "job", "step"],
)
def test_immediate_task_refuses_reports(transition: Transition) -> None:
    error = refused(immediate(), transition)

    assert "immediate" in error.reason
    assert error.current == "done"


def test_immediate_task_refuses_cancel() -> None:
    with pytest.raises(ConflictError, match="already done"):
        immediate().request_cancel("oops", at(1))


def test_immediate_task_refuses_rerun() -> None:
    with pytest.raises(ConflictError, match="immediate task cannot be rerun"):
        immediate().rerun(new_task_id=NEW_ID, author=USER, force=False, now=at(1))


def test_immediate_task_has_no_timeout_to_fire() -> None:
    task = immediate()
    task.collect_events()

    assert task.time_out(at(10**6)) is False
    assert task.collect_events() == []


# ---------------------------------------------------------------- creation


def test_executable_task_is_created_pending_with_the_default_timeout() -> None:
    task = executable()

    assert task.status == Status.PENDING
    assert task.timeout_seconds == DEFAULT_TIMEOUT_SECONDS == 3600
    assert set(statuses(task).values()) == {"pending"}
    assert task.started_at is None and task.deadline is None


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"kind": "immediate", "jobs": (job("a", "s"),)}, ("jobs",)),
        ({"kind": "immediate", "timeout_seconds": 60}, ("timeout_seconds",)),
        ({"kind": "executable", "jobs": ()}, ("jobs",)),
        (
            {"kind": "executable", "jobs": (job("a", "s"),), "timeout_seconds": 0},
            ("timeout_seconds",),
        ),
        (
            {"kind": "executable", "jobs": (job("a", "s"),), "timeout_seconds": 7 * 24 * 3600 + 1},
            ("timeout_seconds",),
        ),
        ({"kind": "scheduled"}, ("kind",)),
    ],
    ids=[
        "immediate with jobs",
        "immediate with timeout",
        "executable without jobs",
        "zero timeout",
        "timeout over 7 days",
        "unknown kind",
    ],
)
def test_malformed_task_is_refused_at_its_field(fields: dict[str, object], loc: tuple) -> None:
    base: dict[str, object] = {
        "task_id": TASK_ID,
        "org": "acme",
        "type": "app.deploy",
        "title": "Deploy",
        "author": USER,
        "now": T0,
    }
    with pytest.raises(InvalidRequestError) as caught:
        Task.create(**(base | fields))  # type: ignore[arg-type]

    assert [p.loc for p in caught.value.problems] == [loc]


def test_timeout_of_exactly_seven_days_is_accepted() -> None:
    assert executable(timeout_seconds=7 * 24 * 3600).timeout_seconds == 604800


# ---------------------------------------------------------------- queueing


def test_queued_task_queues_the_jobs_without_needs() -> None:
    task = executable()

    events = report(task, to("queued"), now=at(3))

    assert names(events) == ["TaskQueued", "JobQueued", "JobQueued"]
    assert [e.job for e in named(events, "JobQueued")] == ["build", "lint"]
    assert task.status == Status.QUEUED
    assert task.queued_at == at(3)
    assert task.job("deploy").status == Status.PENDING


def test_first_job_starting_queues_the_task_implicitly() -> None:
    task = executable()

    events = report(task, to("in_progress", "build", "clone"), now=at(5))

    assert names(events) == [
        "TaskQueued",
        "JobQueued",
        "JobQueued",
        "JobStarted",
        "StepStarted",
        "TaskStatusChanged",
    ]
    assert task.status == Status.IN_PROGRESS
    assert task.started_at == at(5)
    assert task.job("build").attempt == 1
    assert task.job("lint").status == Status.QUEUED


def test_job_reported_started_before_its_first_step() -> None:
    task = executable()
    report(task, to("in_progress", "lint"))

    events = report(task, to("in_progress", "lint", "check"))

    assert names(events) == ["StepStarted"]
    assert task.job("lint").attempt == 1


def test_deadline_runs_from_the_first_job_start() -> None:
    task = executable(timeout_seconds=90)
    report(task, to("queued"), now=at(1))
    assert task.deadline is None

    report(task, to("in_progress", "lint", "check"), now=at(10))

    assert task.deadline == at(100)


# ---------------------------------------------------------------- steps in order


@pytest.mark.parametrize(
    ("clone", "reason"),
    [
        (None, "step compile cannot start: step clone is pending"),
        ("in_progress", "step compile cannot start: step clone is in progress"),
    ],
)
def test_step_cannot_start_before_the_previous_step_finished(
    clone: str | None, reason: str
) -> None:
    task = executable()
    report(task, to("queued"))
    if clone:
        report(task, to(clone, "build", "clone"))

    error = refused(task, to("in_progress", "build", "compile"))

    assert error.reason == reason
    assert (error.current, error.requested) == ("pending", "in_progress")


@pytest.mark.parametrize("outcome", ["done", "done_with_warnings"])
def test_next_step_starts_after_the_previous_succeeded(outcome: str) -> None:
    task = started()
    report(task, to(outcome, "build", "clone"))

    report(task, to("in_progress", "build", "compile"))

    assert task.job("build").steps[1].status == Status.IN_PROGRESS


# ---------------------------------------------------------------- needs


def test_job_with_needs_waits_pending_until_its_needs_are_done() -> None:
    task = started()

    # deploy needs build, which is still running: it stays pending and cannot start.
    assert task.job("deploy").status == Status.PENDING
    error = refused(task, to("in_progress", "deploy"))
    assert error.reason == "job deploy cannot start yet: it needs build (in progress)"
    error = refused(task, to("in_progress", "deploy", "push"))
    assert error.reason == "step push cannot start yet: job deploy needs build (in progress)"

    # build finishes: deploy is queued in the same change.
    report(task, to("done", "build", "clone"))
    events = report(task, to("in_progress", "build", "compile"), to("done", "build", "compile"))

    assert names(events)[-3:] == ["StepFinished", "JobFinished", "JobQueued"]
    assert named(events, "JobQueued")[0].job == "deploy"
    assert task.job("deploy").status == Status.QUEUED
    # notify needs deploy, which has not run.
    assert task.job("notify").status == Status.PENDING


def test_need_done_with_warnings_satisfies_its_dependant() -> None:
    task = started()

    report(task, to("done_with_warnings", "build", "clone"))
    run_steps(task, "build", "compile")

    assert task.job("build").status == Status.DONE_WITH_WARNINGS
    assert task.job("deploy").status == Status.QUEUED


def test_job_waits_for_every_one_of_its_needs() -> None:
    task = executable(job("a", "s"), job("b", "s"), job("c", "s", needs=["a", "b"]))

    run_steps(task, "a", "s")

    assert task.job("c").status == Status.PENDING
    assert refused(task, to("in_progress", "c")).reason == (
        "job c cannot start yet: it needs b (queued)"
    )
    run_steps(task, "b", "s")
    assert task.job("c").status == Status.QUEUED


@pytest.mark.parametrize(
    ("ending", "label"),
    [
        ([to("failed", "build", "clone")], "failed"),
        ([to("timed_out", "build", "clone")], "timed out"),
        ([to("canceled", "build")], "canceled"),
        ([to("failed", "build", error={"message": "worker died"})], "failed"),
    ],
    ids=["step failed", "step timed out", "job canceled", "job failed"],
)
def test_need_that_cannot_succeed_cancels_its_dependants_transitively(
    ending: list, label: str
) -> None:
    task = started()

    events = report(task, *ending, now=at(7))

    finished = {e.job: e for e in named(events, "JobFinished")}
    assert (finished["deploy"].status, finished["deploy"].reason) == (
        "canceled",
        f"need build {label}",
    )
    assert (finished["notify"].status, finished["notify"].reason) == (
        "canceled",
        "need deploy canceled",
    )
    assert task.job("deploy").reason == f"need build {label}"
    assert statuses(task)["deploy.push"] == statuses(task)["notify.send"] == "canceled"
    # lint is independent and may still run: the task is not finished.
    assert task.job("lint").status == Status.QUEUED
    assert task.status == Status.IN_PROGRESS


# ---------------------------------------------------------------- jobs finish by themselves


def test_job_finishes_done_when_its_last_step_is_done() -> None:
    task = started()
    report(task, to("done", "build", "clone"), to("in_progress", "build", "compile"))
    assert task.job("build").status == Status.IN_PROGRESS

    events = report(task, to("done", "build", "compile"), now=at(20))

    assert [(e.job, e.status) for e in named(events, "JobFinished")] == [("build", "done")]
    assert task.job("build").finished_at == at(20)


def test_job_finishes_with_warnings_when_any_step_warned() -> None:
    task = started()

    report(task, to("done_with_warnings", "build", "clone"))
    run_steps(task, "build", "compile")

    assert task.job("build").status == Status.DONE_WITH_WARNINGS


def test_job_cannot_be_reported_done_by_the_executor() -> None:
    task = started()

    error = refused(task, to("done", "build"))

    assert error.reason == (
        "job build cannot be set done: it finishes by itself when its steps finish "
        "(step clone is in progress, step compile is pending)"
    )


def test_failed_step_fails_its_job_and_cancels_the_remaining_steps() -> None:
    task = started()
    boom = {"message": "disk full", "code": "ENOSPC"}

    events = report(task, to("failed", "build", "clone", error=boom))

    build = task.job("build")
    assert (build.status, build.error, build.reason) == (Status.FAILED, boom, "step clone failed")
    assert [s.status for s in build.steps] == [Status.FAILED, Status.CANCELED]
    assert named(events, "StepFinished")[0].error == boom


def test_failed_job_lets_running_parallel_jobs_finish_then_task_fails() -> None:
    task = started()
    # lint runs beside build.
    report(task, to("in_progress", "lint", "check"))

    # build fails: its dependants are canceled, lint keeps running.
    report(task, to("failed", "build", "clone"))
    assert task.status == Status.IN_PROGRESS
    assert task.job("lint").status == Status.IN_PROGRESS

    # lint finishes: nothing runs any more and the task ends failed.
    events = report(task, to("done", "lint", "check"))

    assert task.status == Status.FAILED
    assert names(events)[-1] == "TaskFinished"
    assert named(events, "TaskFinished")[0].status == "failed"


# ---------------------------------------------------------------- back-off and retries


def test_backed_off_job_resets_its_steps_and_next_start_is_a_new_attempt() -> None:
    task = started()
    report(task, to("done", "build", "clone"), to("in_progress", "build", "compile"))

    # The executor reports the attempt failed and will be retried.
    lost = {"message": "worker lost"}
    events = report(task, to("backed_off", "build", retry_at=at(60), error=lost))

    build = task.job("build")
    assert names(events) == ["JobBackedOff", "TaskStatusChanged"]
    assert (build.status, build.retry_at, build.error) == (Status.BACKED_OFF, at(60), lost)
    assert [s.status for s in build.steps] == [Status.PENDING, Status.PENDING]
    assert task.status == Status.BACKED_OFF

    # The retry starts the first step again: attempt 2.
    events = report(task, to("in_progress", "build", "clone"), now=at(61))

    assert named(events, "JobStarted")[0].attempt == 2
    assert (build.attempt, build.retry_at) == (2, None)
    assert build.started_at == T0  # the job's runtime counts from its first attempt
    assert task.status == Status.IN_PROGRESS


def test_backed_off_job_restarts_when_reported_started() -> None:
    task = started()
    report(task, to("backed_off", "build"))

    report(task, to("in_progress", "build"))

    assert task.job("build").attempt == 2


# ---------------------------------------------------------------- cancel


@pytest.mark.parametrize("status", ["pending", "queued"])
def test_cancel_before_anything_started_cancels_everything_at_once(status: str) -> None:
    task = executable()
    if status == "queued":
        report(task, to("queued"))
    task.collect_events()

    task.request_cancel("wrong branch", at(5))

    events = task.collect_events()
    assert names(events)[0] == "TaskCancelRequested"
    assert names(events)[-1] == "TaskFinished"
    assert task.status == Status.CANCELED
    assert set(statuses(task).values()) == {"canceled"}
    assert task.job("build").reason == "cancellation requested"
    assert task.cancel_reason == "wrong branch"
    assert task.failure is None


def test_cancel_running_task_cancels_what_has_not_started() -> None:
    task = started()

    task.request_cancel(None, at(5))

    assert task.status == Status.CANCELING
    assert statuses(task) == {
        "build": "in_progress",
        "build.clone": "in_progress",
        "build.compile": "pending",
        "lint": "canceled",
        "lint.check": "canceled",
        "deploy": "canceled",
        "deploy.push": "canceled",
        "notify": "canceled",
        "notify.send": "canceled",
    }
    assert names(task.collect_events())[-1] == "TaskStatusChanged"


def test_nothing_new_starts_once_cancellation_was_requested() -> None:
    task = started()
    task.request_cancel(None, at(5))
    # The running step may still finish.
    report(task, to("done", "build", "clone"))

    error = refused(task, to("in_progress", "build", "compile"))

    assert error.reason == (
        "step compile cannot start: cancellation was requested, nothing new starts"
    )
    assert (error.current, error.requested) == ("pending", "in_progress")


def test_canceling_task_is_canceled_when_running_work_is_reported_canceled() -> None:
    task = started()
    task.request_cancel(None, at(5))

    events = report(task, to("canceled", "build", "clone"))

    assert task.job("build").status == Status.CANCELED
    assert task.status == Status.CANCELED
    assert named(events, "TaskFinished")[0].status == "canceled"


def test_canceling_task_is_canceled_even_when_running_work_finishes() -> None:
    task = started()
    report(task, to("in_progress", "lint", "check"))
    task.request_cancel(None, at(5))

    # lint was running and finishes; build is reported canceled.
    report(task, to("done", "lint", "check"))
    assert task.status == Status.CANCELING
    report(task, to("canceled", "build"))

    assert task.job("lint").status == Status.DONE
    assert task.status == Status.CANCELED


def test_job_backing_off_during_cancellation_is_canceled_at_once() -> None:
    task = started()
    task.request_cancel(None, at(5))

    # Its retry could never start, so it does not wait for one.
    events = report(task, to("backed_off", "build", retry_at=at(60)))

    assert names(events) == ["JobBackedOff", "JobFinished", "TaskFinished"]
    assert task.job("build").reason == "cancellation requested"
    assert task.status == Status.CANCELED


def test_second_cancel_request_records_nothing() -> None:
    task = started()
    task.request_cancel("first", at(5))
    task.collect_events()

    task.request_cancel("second", at(6))

    assert task.collect_events() == []
    assert task.cancel_reason == "first"


@pytest.mark.parametrize(
    "status", ["done", "done_with_warnings", "failed", "timed_out", "canceled"]
)
def test_cancel_on_a_finished_task_is_a_conflict(status: str) -> None:
    task = task_in_status(status)

    with pytest.raises(ConflictError) as caught:
        task.request_cancel(None, at(100))

    assert caught.value.current_status == status
    assert "nothing to cancel" in caught.value.reason


def test_canceled_step_cancels_its_job_without_a_cancel_request() -> None:
    task = started()

    report(task, to("canceled", "build", "clone"))

    assert task.job("build").status == Status.CANCELED
    assert task.job("build").reason == "step clone canceled"
    assert task.job("build").steps[1].status == Status.CANCELED
    assert task.job("deploy").reason == "need build canceled"
    assert task.cancel_requested is False
    assert task.status == Status.IN_PROGRESS  # lint may still run


# ---------------------------------------------------------------- hard timeout


def timing_out() -> Task:
    """The pipeline (timeout 60 s) with build half done and lint done, started at T0."""
    task = executable(timeout_seconds=60)
    run_steps(task, "build", "clone")
    report(task, to("in_progress", "build", "compile"))
    run_steps(task, "lint", "check")
    task.collect_events()
    return task


def test_hard_timeout_times_out_every_unfinished_job_and_step() -> None:
    task = timing_out()

    assert task.time_out(at(60)) is True

    events = task.collect_events()
    assert names(events)[0] == "TaskTimedOut"
    assert names(events)[-1] == "TaskFinished"
    assert statuses(task) == {
        "build": "timed_out",
        "build.clone": "done",
        "build.compile": "timed_out",
        "lint": "done",
        "lint.check": "done",
        "deploy": "timed_out",
        "deploy.push": "timed_out",
        "notify": "timed_out",
        "notify.send": "timed_out",
    }
    assert task.status == Status.TIMED_OUT
    assert task.failure is not None
    assert task.failure["reason"] == "timeout"
    assert "60 s" in task.failure["message"]


def test_hard_timeout_overrides_a_pending_cancellation() -> None:
    task = timing_out()
    task.request_cancel(None, at(30))

    task.time_out(at(61))

    assert task.status == Status.TIMED_OUT


def test_hard_timeout_is_refused_before_the_deadline() -> None:
    task = timing_out()

    with pytest.raises(ConflictError, match="not yet"):
        task.time_out(at(59))
    assert task.collect_events() == []


def test_hard_timeout_is_refused_before_the_task_started() -> None:
    task = executable()
    report(task, to("queued"))

    with pytest.raises(ConflictError, match="not started"):
        task.time_out(at(10**6))


@pytest.mark.parametrize("status", ["done", "failed", "canceled", "timed_out"])
def test_hard_timeout_of_a_finished_task_records_nothing(status: str) -> None:
    task = task_in_status(status)
    before = copy.deepcopy(task)

    assert task.time_out(at(10**6)) is False

    assert task.collect_events() == []
    assert task == before


@pytest.mark.parametrize(
    "transition",
    [to("done", "build", "compile"), to("in_progress", "deploy"), to("queued")],
    ids=["step", "job", "task"],
)
def test_reports_after_the_hard_timeout_say_the_task_timed_out(transition: Transition) -> None:
    task = timing_out()
    task.time_out(at(60))

    error = refused(task, transition)

    assert error.reason == "task timed out: it accepts no more reports"


# ---------------------------------------------------------------- forced reruns


USER_FACING = {"message": "3 lint warnings", "user_facing": True}


def test_forced_task_downgrades_a_user_facing_failure_and_goes_on() -> None:
    task = executable(job("build", "clone", "compile"), forced=True)
    report(task, to("in_progress", "build", "clone"))

    events = report(task, to("failed", "build", "clone", error=USER_FACING))

    finished = named(events, "StepFinished")[0]
    assert (finished.status, finished.error, finished.downgraded) == (
        "done_with_warnings",
        USER_FACING,
        True,
    )
    clone = task.job("build").steps[0]
    assert (clone.status, clone.downgraded, clone.error) == (
        Status.DONE_WITH_WARNINGS,
        True,
        USER_FACING,
    )
    # The job goes on, and the task can end done with warnings.
    run_steps(task, "build", "compile")
    assert task.status == Status.DONE_WITH_WARNINGS


@pytest.mark.parametrize(
    ("forced", "error"),
    [
        (True, {"message": "segfault"}),
        (True, {"message": "segfault", "user_facing": False}),
        (True, None),
        (False, USER_FACING),
    ],
    ids=["forced internal", "forced not user facing", "forced without error", "not forced"],
)
def test_failure_still_fails_unless_forced_and_user_facing(
    forced: bool, error: dict | None
) -> None:
    task = executable(job("build", "clone", "compile"), forced=forced)
    report(task, to("in_progress", "build", "clone"))

    events = report(task, to("failed", "build", "clone", error=error))

    assert named(events, "StepFinished")[0].downgraded is False
    assert task.status == Status.FAILED


def test_downgrade_does_not_make_an_illegal_failure_legal() -> None:
    task = executable(job("build", "clone"), forced=True)
    report(task, to("queued"))

    error = refused(task, to("failed", "build", "clone", error=USER_FACING))

    assert error.reason == "step clone cannot go from pending to failed"
    assert (error.current, error.requested) == ("pending", "failed")


# ---------------------------------------------------------------- failure summary


def test_failed_task_names_the_failing_step_and_its_error() -> None:
    task = executable(job("build", "clone", "compile"))
    report(task, to("in_progress", "build", "clone"))

    report(task, to("failed", "build", "clone", error={"message": "disk full"}))

    assert task.failure == {
        "reason": "job",
        "message": "Step clone of job build failed: disk full",
        "job": "build",
        "step": "clone",
        "error": {"message": "disk full"},
    }


def test_failed_task_names_a_job_reported_failed_directly() -> None:
    task = executable(job("build", "clone"))
    report(task, to("in_progress", "build"))

    report(task, to("failed", "build", error={"message": "worker died"}))

    assert task.failure is not None
    assert (task.failure["reason"], task.failure["step"]) == ("job", None)
    assert task.failure["message"] == "Job build failed: worker died"


@pytest.mark.parametrize(
    "plan",
    [
        job("setup", "prepare", system=True),
        job("setup", StepPlan("prepare", "Prepare", system=True)),
    ],
    ids=["system job", "system step"],
)
def test_failure_in_system_work_reads_as_an_internal_reason(plan: JobPlan) -> None:
    task = executable(plan)
    report(task, to("in_progress", "setup", "prepare"))

    report(task, to("failed", "setup", "prepare", error={"message": "vault sealed"}))

    assert task.failure is not None
    assert task.failure["reason"] == "system"
    assert task.failure["message"] == SYSTEM_FAILURE_MESSAGE
    # Auditors still find out which work failed and why.
    assert (task.failure["job"], task.failure["step"]) == ("setup", "prepare")
    assert task.failure["error"] == {"message": "vault sealed"}


def test_failure_summary_names_the_first_job_that_failed() -> None:
    task = executable(job("a", "s"), job("b", "s"))
    report(task, to("in_progress", "a", "s"), to("in_progress", "b", "s"))

    report(task, to("failed", "b", "s"), now=at(5))
    report(task, to("failed", "a", "s"), now=at(6))

    assert task.failure is not None
    assert task.failure["job"] == "b"


@pytest.mark.parametrize("status", ["done", "done_with_warnings", "canceled"])
def test_task_that_did_not_fail_has_no_failure_summary(status: str) -> None:
    assert task_in_status(status).failure is None


# ---------------------------------------------------------------- rerun


@pytest.mark.parametrize("status", ["failed", "timed_out", "canceled"])
def test_rerun_creates_a_new_task_with_the_same_plan(status: str) -> None:
    old = task_in_status(
        status, project="shop", labels={"app": "shop"}, origin_task_id=ORIGIN_ID, silent=True
    )

    new = old.rerun(new_task_id=NEW_ID, author=SUPPORT, force=False, now=at(500))

    assert (new.id, new.kind, new.status) == (NEW_ID, "executable", Status.PENDING)
    assert (new.org, new.type, new.title) == (old.org, old.type, old.title)
    assert (new.project, new.labels, new.timeout_seconds) == ("shop", {"app": "shop"}, 60)
    assert new.plan() == old.plan()
    assert (new.rerun_of, new.origin_task_id) == (TASK_ID, ORIGIN_ID)
    assert (new.author, new.forced) == (SUPPORT, False)
    assert names(new.collect_events()) == ["TaskCreated"]
    # The old task keeps its status and records which task reran it.
    rerun_events = old.collect_events()
    assert names(rerun_events) == ["TaskRerun"]
    assert rerun_events[0].rerun_task_id == NEW_ID
    assert old.reruns == [NEW_ID]
    assert old.status == status


def test_rerun_copies_the_plan_of_a_multi_job_task() -> None:
    old = started()
    report(old, to("failed", "build", "clone"), to("canceled", "lint"))

    new = old.rerun(new_task_id=NEW_ID, author=USER, force=False, now=at(9))

    assert [j.as_dict() for j in new.plan()] == [j.as_dict() for j in old.plan()]
    assert set(statuses(new).values()) == {"pending"}


def test_forced_rerun_creates_a_forced_task() -> None:
    old = task_in_status("failed")

    new = old.rerun(new_task_id=NEW_ID, author=USER, force=True, now=at(9))

    assert new.forced is True
    assert old.collect_events()[0].forced is True


def test_finished_task_can_be_rerun_more_than_once() -> None:
    old = task_in_status("failed")
    other = UUID("00000000-0000-4000-8000-000000000003")

    old.rerun(new_task_id=NEW_ID, author=USER, force=False, now=at(9))
    old.rerun(new_task_id=other, author=USER, force=True, now=at(10))

    assert old.reruns == [NEW_ID, other]


@pytest.mark.parametrize(
    "status",
    ["pending", "queued", "in_progress", "backed_off", "canceling", "done", "done_with_warnings"],
)
def test_rerun_is_refused_unless_the_task_failed_timed_out_or_was_canceled(status: str) -> None:
    task = task_in_status(status)

    with pytest.raises(ConflictError) as caught:
        task.rerun(new_task_id=NEW_ID, author=USER, force=False, now=at(9))

    assert caught.value.reason.endswith(f"this one is {Status(status).label}")
    assert caught.value.current_status == status
    assert task.collect_events() == []


def test_rerun_is_refused_for_a_non_rerunnable_task() -> None:
    task = executable(job("a", "s"), rerunnable=False)
    task.request_cancel(None, at(1))

    with pytest.raises(ConflictError, match=r"app\.deploy are not rerunnable"):
        task.rerun(new_task_id=NEW_ID, author=USER, force=False, now=at(9))


# ---------------------------------------------------------------- no-ops and derived events


def _clone_done(task: Task) -> None:
    report(task, to("done", "build", "clone"))


def _build_failed(task: Task) -> None:
    report(task, to("failed", "build", error={"message": "worker died"}))


@pytest.mark.parametrize(
    ("prepare", "again"),
    [
        (lambda task: None, to("queued")),
        (lambda task: None, to("in_progress", "build")),
        (lambda task: None, to("in_progress", "build", "clone")),
        (_clone_done, to("done", "build", "clone")),
        (lambda task: report(task, to("backed_off", "build")), to("backed_off", "build")),
        (_build_failed, to("failed", "build")),
        (lambda task: None, to("pending", "deploy")),
        (lambda task: None, to("queued", "lint")),
    ],
    ids=[
        "task queued",
        "job started",
        "step started",
        "step done",
        "job backed off",
        "job failed",
        "job pending",
        "job queued",
    ],
)
def test_reporting_the_current_status_again_records_nothing(
    prepare: Callable[[Task], object], again: Transition
) -> None:
    task = started()
    prepare(task)
    task.collect_events()
    before = copy.deepcopy(task)

    assert report(task, again) == []
    assert task == before


def test_derived_changes_are_recorded_as_events() -> None:
    task = started()
    report(task, to("done", "build", "clone"), to("in_progress", "build", "compile"))
    run_steps(task, "lint", "check")

    # build's last step finishing finishes build and queues deploy.
    events = report(task, to("done", "build", "compile"))
    assert names(events) == ["StepFinished", "JobFinished", "JobQueued"]

    # deploy failing cancels notify and finishes the task.
    events = report(task, to("in_progress", "deploy", "push"), to("failed", "deploy", "push"))
    assert names(events) == [
        "JobStarted",
        "StepStarted",
        "StepFinished",
        "JobFinished",
        "JobFinished",
        "TaskFinished",
    ]
    assert [(e.job, e.status) for e in named(events, "JobFinished")] == [
        ("deploy", "failed"),
        ("notify", "canceled"),
    ]


def test_task_status_change_is_recorded_when_work_backs_off() -> None:
    task = started()

    events = report(task, to("backed_off", "build"))

    assert named(events, "TaskStatusChanged")[0].status == "backed_off"


# ---------------------------------------------------------------- actor and clocks


def test_every_event_records_the_principal_who_caused_it() -> None:
    with acting_as(USER):
        task = executable(timeout_seconds=60)
    task.collect_events()
    with acting_as(EXECUTOR):
        executor_events = report(task, to("in_progress", "build", "clone"))
    task.collect_events()
    with acting_as(SUPPORT):
        task.request_cancel(None, at(5))
        support_events = task.collect_events()
    # The timeout enforcer acts as the service itself.
    task.time_out(at(60))
    enforcer_events = task.collect_events()

    assert task.author == USER
    assert {e.actor["id"] for e in executor_events} == {"runner-1"}
    assert {e.actor["kind"] for e in support_events} == {"support"}
    assert names(enforcer_events)[0] == "TaskTimedOut"
    assert {e.actor["id"] for e in enforcer_events} == {SYSTEM_ACTOR["id"]}


def test_created_event_records_its_actor() -> None:
    with acting_as(EXECUTOR):
        task = executable()

    assert task.collect_events()[0].actor == EXECUTOR


def test_events_occur_at_the_reporters_time_when_given() -> None:
    task = executable()

    events = report(task, to("in_progress", "build", "clone", at=at(3)), now=at(9))

    assert {e.occurred_at for e in events} == {at(3)}
    assert task.job("build").started_at == at(3)
    assert task.job("build").steps[0].started_at == at(3)


def test_events_occur_at_the_service_time_otherwise() -> None:
    task = executable()

    events = report(task, to("in_progress", "build", "clone"), now=at(9))

    assert {e.occurred_at for e in events} == {at(9)}


def test_events_of_one_command_share_its_command_id() -> None:
    task = executable()
    with command_scope("cmd-1"):
        events = report(task, to("in_progress", "build", "clone"))

    assert {e.command_id for e in events} == {"cmd-1"}


# ---------------------------------------------------------------- refused transitions


def test_refusal_points_at_the_offending_item_of_the_list() -> None:
    task = executable()

    error = refused(
        task,
        to("in_progress", "build", "clone"),
        to("done", "build", "clone"),
        to("done", "lint", "check"),
    )

    assert error.index == 2
    assert error.target.as_dict() == {"job": "lint", "step": "check"}
    assert error.reason == "step check cannot go from pending to done"


@pytest.mark.parametrize(
    ("transition", "loc"),
    [
        (to("in_progress", "ship"), ("job",)),
        (to("in_progress", "build", "link"), ("step",)),
        (to("in_progress", None, "clone"), ("step",)),
    ],
    ids=["unknown job", "unknown step", "step without job"],
)
def test_unknown_target_is_refused_at_its_index(transition: Transition, loc: tuple) -> None:
    task = executable()

    with pytest.raises(UnknownTargetError) as caught:
        task.report([to("queued"), transition], at(1))

    assert caught.value.index == 1
    assert [p.loc for p in caught.value.problems] == [loc]


# Legal reports per domain.md, written out here rather than read from domain.status.
STEP_LEGAL = {
    "pending": {"in_progress", "canceled", "timed_out"},
    "in_progress": {"done", "done_with_warnings", "failed", "canceled", "timed_out"},
}
JOB_LEGAL = {
    "pending": {"failed", "canceled", "timed_out"},  # in_progress only once its needs are done
    "queued": {"in_progress", "failed", "canceled", "timed_out"},
    "in_progress": {"backed_off", "failed", "canceled", "timed_out"},
    "backed_off": {"in_progress", "failed", "canceled", "timed_out"},
}
ALL = [s.value for s in Status]
TERMINAL = ["done", "done_with_warnings", "failed", "timed_out", "canceled"]


def table_task() -> Task:
    return executable(
        job("build", "clone", "compile"),
        job("lint", "check"),
        job("deploy", "push", needs=["build"]),
    )


def step_in(current: str) -> Task:
    """build.clone in `current`, while lint keeps the task unfinished."""
    task = table_task()
    report(task, to("queued"))
    if current != "pending":
        report(task, to("in_progress", "build", "clone"))
    if current not in ("pending", "in_progress"):
        report(task, to(current, "build", "clone"))
    return task


def job_in(current: str) -> tuple[Task, str]:
    """A job in `current` (deploy when pending, else build), the task unfinished."""
    task = table_task()
    report(task, to("queued"))
    if current == "queued":
        return task, "build"
    report(task, to("in_progress", "build", "clone"))
    if current == "pending":
        return task, "deploy"
    if current == "backed_off":
        report(task, to("backed_off", "build"))
    elif current in ("done", "done_with_warnings"):
        report(task, to(current, "build", "clone"))
        run_steps(task, "build", "compile")
    elif current != "in_progress":
        report(task, to(current, "build"))
    return task, "build"


def task_at(current: str) -> Task:
    task = table_task()
    if current == "in_progress":
        report(task, to("in_progress", "build", "clone"))
    elif current == "failed":
        report(task, to("failed", "build"), to("failed", "lint"))
    elif current == "canceled":
        task.request_cancel(None, at(1))
    return task


REFUSALS = (
    [
        ("step", current, requested)
        for current in ["pending", "in_progress", *TERMINAL]
        for requested in ALL
        if requested != current and requested not in STEP_LEGAL.get(current, set())
    ]
    + [
        ("job", current, requested)
        for current in ["pending", "queued", "in_progress", "backed_off", *TERMINAL]
        for requested in ALL
        if requested != current and requested not in JOB_LEGAL.get(current, set())
    ]
    + [
        ("task", current, requested)
        for current in ["pending", "in_progress"]
        for requested in ALL
        if requested not in ("queued", current)
    ]
    + [("task", "failed", "queued"), ("task", "canceled", "queued")]
)


@pytest.mark.parametrize(
    ("kind", "current", "requested"), REFUSALS, ids=["-".join(r) for r in REFUSALS]
)
def test_illegal_transition_is_refused_with_a_readable_reason(
    kind: str, current: str, requested: str
) -> None:
    if kind == "step":
        task, target = step_in(current), to(requested, "build", "clone")
        subject = "step clone"
    elif kind == "job":
        task, key = job_in(current)
        target, subject = to(requested, key), f"job {key}"
    else:
        task, target, subject = task_at(current), to(requested), "task"
    assert (task.status if kind == "task" else _status_of(task, target)) == current
    task.collect_events()
    before = copy.deepcopy(task)
    # A report of what build already is changes nothing, so the refusal is item 1.
    harmless = to(task.job("build").status, "build")

    error = refused(task, harmless, target)

    assert (error.current, error.requested, error.index) == (current, requested, 1)
    assert subject in error.reason
    assert Status(current).label in error.reason or Status(requested).label in error.reason
    assert "Status." not in error.reason
    assert error.target.as_dict() == {"job": target.job, "step": target.step}
    assert task == before  # nothing of the refused item applied


def _status_of(task: Task, t: Transition) -> str:
    assert t.job is not None
    found = task.job(t.job)
    if t.step is None:
        return found.status.value
    return found.steps[found.step_index(t.step)].status.value
