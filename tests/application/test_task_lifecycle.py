"""A task's life through the ledger: jobs in parallel, needs, retries, cancel, timeout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.application import TaskLedger
from domain.application_errors import VersionMismatchError
from domain.context import acting_as
from domain.errors import ConflictError, TransitionRefusedError
from domain.idempotency import AlreadyAnsweredError, IdempotentRequest
from domain.status import Status
from domain.work import Transition

from .support import (
    ALICE,
    EXECUTOR,
    create_executable,
    event_types,
    finish,
    job,
    queued,
    report,
    run_step,
    start,
    statuses,
)


def test_deploy_with_parallel_jobs_and_a_dependant_ends_done(ledger: TaskLedger) -> None:
    before = datetime.now(UTC)
    task_id = create_executable(
        ledger,
        job("build", "checkout", "compile"),
        job("test", "unit"),
        job("deploy", "push", "restart", needs=["build", "test"]),
    )
    # The executor picks the task up: the jobs without needs are queued.
    report(ledger, task_id, queued())
    # build and test run in parallel.
    report(ledger, task_id, start("build", "checkout"))
    report(ledger, task_id, start("test", "unit"))
    assert statuses(ledger.get_task(task_id))["deploy"][0] == "pending"
    report(ledger, task_id, finish("build", "checkout"))
    report(ledger, task_id, *run_step("build", "compile"))
    # deploy still waits for test.
    view = ledger.get_task(task_id)
    assert statuses(view)["build"][0] == "done"
    assert statuses(view)["deploy"][0] == "pending"
    # test finishing queues deploy.
    report(ledger, task_id, finish("test", "unit"))
    assert statuses(ledger.get_task(task_id))["deploy"][0] == "queued"
    report(ledger, task_id, *run_step("deploy", "push"))
    written = report(ledger, task_id, *run_step("deploy", "restart"))

    task = ledger.get_task(task_id)
    assert written.task["status"] == task["status"] == "done"
    assert task["finished_at"] is not None and task["duration_seconds"] is not None
    assert all(j["status"] == "done" and j["attempt"] == 1 for j in task["jobs"])

    timeline = ledger.timeline(task_id)
    assert [e["type"] for e in timeline] == [
        "TaskCreated",
        "TaskQueued",
        "JobQueued",  # build
        "JobQueued",  # test
        "JobStarted",  # build
        "StepStarted",
        "TaskStatusChanged",  # in_progress
        "JobStarted",  # test
        "StepStarted",
        "StepFinished",  # build/checkout
        "StepStarted",
        "StepFinished",  # build/compile
        "JobFinished",  # build done
        "StepFinished",  # test/unit
        "JobFinished",  # test done
        "JobQueued",  # deploy
        "JobStarted",
        "StepStarted",
        "StepFinished",
        "StepStarted",
        "StepFinished",
        "JobFinished",  # deploy done
        "TaskFinished",
    ]
    assert [e["version"] for e in timeline] == list(range(1, len(timeline) + 1))
    assert task["version"] == len(timeline)
    assert timeline[0]["actor"] == ALICE
    assert all(e["actor"] == EXECUTOR for e in timeline[1:])
    assert all(e["occurred_at"] >= before and e["recorded_at"] >= before for e in timeline)
    assert timeline[-1]["data"]["status"] == "done"
    assert [e["data"]["job"] for e in timeline if e["type"] == "JobQueued"] == [
        "build",
        "test",
        "deploy",
    ]


def test_repeated_report_is_a_no_op_and_expected_version_is_checked(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile"))
    first = report(ledger, task_id, queued(), start("build", "compile"))
    version = first.task["version"]
    # An executor retrying the same report changes nothing and stores nothing.
    again = report(ledger, task_id, queued(), start("build", "compile"))
    assert again.position is None
    assert again.task["version"] == version
    # A report made against a version the task has moved past is refused.
    with pytest.raises(VersionMismatchError), acting_as(EXECUTOR):
        ledger.report(task_id, [finish("build", "compile")], expected_version=version - 1)
    with acting_as(EXECUTOR):
        done = ledger.report(task_id, [finish("build", "compile")], expected_version=version)
    assert done.task["status"] == "done"


def test_refused_list_of_transitions_stores_none_of_them(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile", "package"))
    with pytest.raises(TransitionRefusedError) as refused:
        # The first two are legal, the third is not (package before compile finished).
        report(ledger, task_id, queued(), start("build", "compile"), start("build", "package"))
    assert refused.value.index == 2
    assert event_types(ledger, task_id) == ["TaskCreated"]


def test_reported_time_is_kept_as_occurred_at(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile"))
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    report(ledger, task_id, start("build", "compile", at=at))
    started = [e for e in ledger.timeline(task_id) if e["type"] == "StepStarted"]
    assert started[0]["occurred_at"] == at
    assert started[0]["recorded_at"] < at


def test_failed_need_cancels_dependants_and_the_task_fails_once_nothing_runs(
    ledger: TaskLedger,
) -> None:
    task_id = create_executable(
        ledger,
        job("build", "compile"),
        job("lint", "ruff"),
        job("deploy", "push", needs=["build"]),
        job("notify", "slack", needs=["deploy"]),
    )
    report(ledger, task_id, queued())
    report(ledger, task_id, start("build", "compile"), start("lint", "ruff"))
    # build fails while lint is still running.
    error = {"message": "exit code 2", "user_facing": True}
    report(ledger, task_id, finish("build", "compile", Status.FAILED, error=error))

    view = ledger.get_task(task_id)
    assert statuses(view) == {
        "build": ("failed", {"compile": "failed"}),
        "lint": ("in_progress", {"ruff": "in_progress"}),
        "deploy": ("canceled", {"push": "canceled"}),
        "notify": ("canceled", {"slack": "canceled"}),
    }
    jobs = {j["key"]: j for j in view["jobs"]}
    assert jobs["deploy"]["reason"] == "need build failed"
    assert jobs["notify"]["reason"] == "need deploy canceled"
    # A failed job does not stop a parallel one: the task is not finished yet.
    assert view["status"] == "in_progress"

    report(ledger, task_id, finish("lint", "ruff"))
    view = ledger.get_task(task_id)
    assert view["status"] == "failed"
    assert view["failure"]["job"] == "build"
    assert view["failure"]["step"] == "compile"
    assert "exit code 2" in view["failure"]["message"]
    finished = [e for e in ledger.timeline(task_id) if e["type"] == "JobFinished"]
    assert [(e["data"]["job"], e["data"]["status"]) for e in finished] == [
        ("build", "failed"),
        ("deploy", "canceled"),
        ("notify", "canceled"),
        ("lint", "done"),
    ]


def test_backed_off_job_runs_a_second_attempt_and_history_keeps_both(
    ledger: TaskLedger,
) -> None:
    task_id = create_executable(ledger, job("build", "fetch", "compile"))
    report(ledger, task_id, queued())
    report(ledger, task_id, *run_step("build", "fetch"), start("build", "compile"))
    # The attempt fails and will be retried later.
    retry_at = datetime.now(UTC) + timedelta(minutes=1)
    error = {"message": "runner lost"}
    with acting_as(EXECUTOR):
        backed_off_write = ledger.report(
            task_id,
            [Transition(Status.BACKED_OFF, job="build", retry_at=retry_at, error=error)],
        )
    view = ledger.get_task(task_id)
    assert view["status"] == "backed_off"
    build = view["jobs"][0]
    assert (build["status"], build["attempt"], build["retry_at"]) == ("backed_off", 1, retry_at)
    assert [s["status"] for s in build["steps"]] == ["pending", "pending"]

    # The second attempt starts over from the first step and succeeds.
    report(ledger, task_id, *run_step("build", "fetch"))
    report(ledger, task_id, *run_step("build", "compile"))
    view = ledger.get_task(task_id)
    assert view["status"] == "done"
    assert (view["jobs"][0]["status"], view["jobs"][0]["attempt"]) == ("done", 2)

    timeline = ledger.timeline(task_id)
    assert [e["data"]["attempt"] for e in timeline if e["type"] == "JobStarted"] == [1, 2]
    backed_off = [e for e in timeline if e["type"] == "JobBackedOff"]
    assert len(backed_off) == 1
    assert backed_off[0]["data"]["attempt"] == 1
    assert backed_off[0]["data"]["error"] == error
    assert [e["data"]["step"] for e in timeline if e["type"] == "StepStarted"] == [
        "fetch",
        "compile",
        "fetch",
        "compile",
    ]
    # The first attempt's end is still readable at its version.
    at_backoff = ledger.get_task(task_id, version=backed_off_write.task["version"])
    assert at_backoff["status"] == "backed_off"
    assert at_backoff["jobs"][0]["error"] == error


def test_cancel_while_queued_cancels_everything_at_once(ledger: TaskLedger) -> None:
    task_id = create_executable(
        ledger, job("build", "compile"), job("deploy", "push", needs=["build"])
    )
    report(ledger, task_id, queued())
    with acting_as(ALICE):
        written = ledger.cancel(task_id, "wrong branch")

    assert written.task["status"] == "canceled"
    view = ledger.get_task(task_id)
    assert view["status"] == "canceled"
    assert view["cancel_requested"] is True
    assert view["cancel_reason"] == "wrong branch"
    assert statuses(view) == {
        "build": ("canceled", {"compile": "canceled"}),
        "deploy": ("canceled", {"push": "canceled"}),
    }
    assert event_types(ledger, task_id)[-4:] == [
        "TaskCancelRequested",
        "JobFinished",
        "JobFinished",
        "TaskFinished",
    ]
    assert ledger.timeline(task_id)[-4]["actor"] == ALICE
    # Cancel on a terminal task is a conflict; reports are refused.
    with pytest.raises(ConflictError):
        ledger.cancel(task_id)
    with pytest.raises(TransitionRefusedError, match="canceled"):
        report(ledger, task_id, start("build", "compile"))


def test_cancel_while_pending_cancels_at_once(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile"))
    assert ledger.cancel(task_id).task["status"] == "canceled"


def test_cancel_while_running_waits_for_running_work(ledger: TaskLedger) -> None:
    task_id = create_executable(
        ledger,
        job("build", "compile", "package"),
        job("docs", "render"),
        job("deploy", "push", needs=["build"]),
    )
    report(ledger, task_id, queued())
    report(ledger, task_id, start("build", "compile"))
    with acting_as(ALICE):
        written = ledger.cancel(task_id, "stop")

    # What had not started is canceled at once; the running job goes on for now.
    assert written.task["status"] == "canceling"
    assert statuses(ledger.get_task(task_id)) == {
        "build": ("in_progress", {"compile": "in_progress", "package": "pending"}),
        "docs": ("canceled", {"render": "canceled"}),
        "deploy": ("canceled", {"push": "canceled"}),
    }
    # A second cancel request is a no-op.
    assert ledger.cancel(task_id).position is None
    # Nothing new may start.
    report(ledger, task_id, finish("build", "compile"))
    with pytest.raises(TransitionRefusedError, match="cancellation was requested"):
        report(ledger, task_id, start("build", "package"))
    # The executor reports the running job canceled: the task is canceled.
    with acting_as(EXECUTOR):
        ledger.report(task_id, [Transition(Status.CANCELED, job="build")])
    view = ledger.get_task(task_id)
    assert view["status"] == "canceled"
    assert statuses(view)["build"] == ("canceled", {"compile": "done", "package": "canceled"})


def test_time_out_records_the_hard_timeout_once(ledger: TaskLedger) -> None:
    task_id = create_executable(
        ledger,
        job("build", "compile", "package"),
        job("deploy", "push", needs=["build"]),
        timeout_seconds=60,
    )
    # A task that has not started has no running timeout.
    with pytest.raises(ConflictError, match="not started"):
        ledger.time_out(task_id)
    report(ledger, task_id, queued())
    report(ledger, task_id, *run_step("build", "compile"), start("build", "package"))
    started_at = ledger.get_task(task_id)["started_at"]
    # Not yet.
    with pytest.raises(ConflictError, match="not yet"):
        ledger.time_out(task_id, now=started_at + timedelta(seconds=59))

    written = ledger.time_out(task_id, now=started_at + timedelta(seconds=61))
    assert written is not None and written.position is not None
    view = ledger.get_task(task_id)
    assert view["status"] == "timed_out"
    assert view["failure"]["reason"] == "timeout"
    assert statuses(view) == {
        "build": ("timed_out", {"compile": "done", "package": "timed_out"}),
        "deploy": ("timed_out", {"push": "timed_out"}),
    }
    assert event_types(ledger, task_id)[-4:] == [
        "TaskTimedOut",
        "JobFinished",
        "JobFinished",
        "TaskFinished",
    ]
    # A second enforcer finds nothing to do; reports get a conflict naming the timeout.
    version = view["version"]
    assert ledger.time_out(task_id, now=started_at + timedelta(seconds=62)) is None
    assert ledger.get_task(task_id)["version"] == version
    with pytest.raises(TransitionRefusedError, match="timed out"):
        report(ledger, task_id, finish("build", "package"))


def test_keyed_no_op_remembers_its_answer(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile"))
    report(ledger, task_id, start("build", "compile"))
    request = IdempotentRequest(answer_id=uuid4(), request_hash="h1", status_code=200)

    # Already in progress: nothing changes, but the keyed request's answer is stored.
    with acting_as(EXECUTOR):
        written = ledger.report(task_id, [start("build", "compile")], request=request)

    answer = ledger.find_answer(request.answer_id)
    assert answer is not None
    assert (answer.subject_id, answer.subject_version) == (task_id, written.task["version"])
    assert written.position == ledger.recorder.max_notification_id()
    # A retry meets that answer rather than recording a second one.
    with pytest.raises(AlreadyAnsweredError) as answered, acting_as(EXECUTOR):
        ledger.report(task_id, [start("build", "compile")], request=request)
    assert answered.value.answer.subject_version == written.task["version"]
    assert ledger.recorder.max_notification_id() == written.position
    # An unkeyed no-op stores nothing at all.
    assert report(ledger, task_id, start("build", "compile")).position is None
