"""Reruns: a new task, linked both ways, stored in one atomic write."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.application import TaskLedger
from domain.application_errors import TaskNotFoundError
from domain.context import acting_as
from domain.errors import ConflictError
from domain.status import Status

from .support import (
    ALICE,
    WODBOT,
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


def failed_deploy(ledger: TaskLedger, **fields: Any) -> UUID:
    """A deploy whose push step failed with a user-facing error."""
    origin = create_executable(ledger, job("create-app", "record"), type="app.create")
    task_id = create_executable(
        ledger,
        job("deploy", "push", "migrate", "restart"),
        job("smoke", "curl", needs=["deploy"]),
        origin_task_id=origin,
        project="shop",
        labels={"app": "shop-web"},
        timeout_seconds=900,
        **fields,
    )
    report(ledger, task_id, queued())
    report(
        ledger,
        task_id,
        start("deploy", "push"),
        finish("deploy", "push", Status.FAILED, error={"message": "quota", "user_facing": True}),
    )
    assert ledger.get_task(task_id)["status"] == "failed"
    return task_id


def stream_versions(ledger: TaskLedger, task_id: UUID) -> list[int]:
    return [e.originator_version for e in ledger.events.get(task_id)]


def test_rerun_creates_a_linked_task_and_both_are_saved_in_one_write(
    ledger: TaskLedger,
) -> None:
    old_id = failed_deploy(ledger)
    old = ledger.get_task(old_id)
    last_position = ledger.recorder.max_notification_id() or 0

    with acting_as(WODBOT):
        written = ledger.rerun(old_id, author=WODBOT)

    new = written.task
    assert new["id"] != old_id
    assert new["rerun_of"] == old_id
    assert new["status"] == "pending"
    assert new["forced"] is False
    assert new["author"] == WODBOT
    for same in ("org", "type", "title", "project", "labels", "timeout_seconds"):
        assert new[same] == old[same], same
    assert new["origin_task_id"] == old["origin_task_id"] is not None
    assert statuses(new) == {
        "deploy": ("pending", {"push": "pending", "migrate": "pending", "restart": "pending"}),
        "smoke": ("pending", {"curl": "pending"}),
    }
    # The old task lists its rerun and keeps its status.
    old_after = ledger.get_task(old_id)
    assert old_after["reruns"] == [new["id"]]
    assert old_after["status"] == "failed"
    assert event_types(ledger, old_id)[-1] == "TaskRerun"
    assert ledger.timeline(old_id)[-1]["actor"] == WODBOT
    # Both streams exist after the one call, written together: the two events are
    # the store's two newest notifications, the old task's first.
    assert stream_versions(ledger, new["id"]) == [1]
    notifications = ledger.recorder.select_notifications(start=last_position + 1, limit=10)
    assert [(n.originator_id, n.originator_version) for n in notifications] == [
        (old_id, old_after["version"]),
        (new["id"], 1),
    ]
    assert written.position == notifications[-1].id
    # A rerun can itself be run to completion.
    report(ledger, new["id"], queued())
    for step in ("push", "migrate", "restart"):
        report(ledger, new["id"], *run_step("deploy", step))
    report(ledger, new["id"], *run_step("smoke", "curl"))
    assert ledger.get_task(new["id"])["status"] == "done"


def test_refused_rerun_stores_nothing(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile"))
    report(ledger, task_id, *run_step("build", "compile"))
    assert ledger.get_task(task_id)["status"] == "done"
    versions = stream_versions(ledger, task_id)
    position = ledger.recorder.max_notification_id()
    new_id = uuid4()

    with pytest.raises(ConflictError, match="only a failed, timed out or canceled task"):
        ledger.rerun(task_id, author=ALICE, new_task_id=new_id)

    assert stream_versions(ledger, task_id) == versions
    assert stream_versions(ledger, new_id) == []
    assert ledger.recorder.max_notification_id() == position
    with pytest.raises(TaskNotFoundError):
        ledger.get_task(new_id)


def test_non_rerunnable_task_cannot_be_rerun(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile"), rerunnable=False)
    ledger.cancel(task_id)
    with pytest.raises(ConflictError, match="not rerunnable"):
        ledger.rerun(task_id, author=ALICE)
    assert ledger.get_task(task_id)["reruns"] == []


def test_rerun_onto_a_taken_id_is_a_conflict_and_stores_nothing(ledger: TaskLedger) -> None:
    old_id = failed_deploy(ledger)
    taken = create_executable(ledger, job("other", "step"))
    versions = stream_versions(ledger, old_id)
    position = ledger.recorder.max_notification_id()

    with pytest.raises(ConflictError, match=str(taken)):
        ledger.rerun(old_id, author=ALICE, new_task_id=taken)

    # The old task did not record a rerun: the two changes are one write.
    assert stream_versions(ledger, old_id) == versions
    assert ledger.get_task(old_id)["reruns"] == []
    assert ledger.recorder.max_notification_id() == position
    assert ledger.conflicts_retried == 0


def test_every_rerun_of_a_task_is_listed(ledger: TaskLedger) -> None:
    old_id = failed_deploy(ledger)
    first = ledger.rerun(old_id, author=ALICE).task["id"]
    second = ledger.rerun(old_id, author=ALICE).task["id"]
    assert ledger.get_task(old_id)["reruns"] == [first, second]


def test_forced_rerun_downgrades_user_facing_failures_and_ends_done_with_warnings(
    ledger: TaskLedger,
) -> None:
    old_id = failed_deploy(ledger)
    new_id = ledger.rerun(old_id, author=ALICE, force=True).task["id"]
    assert ledger.get_task(new_id)["forced"] is True
    assert ledger.timeline(old_id)[-1]["data"]["forced"] is True

    # The same user-facing failure is recorded as a warning, and the job goes on.
    quota = {"message": "quota", "user_facing": True}
    report(ledger, new_id, queued())
    report(ledger, new_id, start("deploy", "push"), finish("deploy", "push", Status.FAILED, quota))
    view = ledger.get_task(new_id)
    push = view["jobs"][0]["steps"][0]
    assert (push["status"], push["downgraded"], push["error"]) == (
        "done_with_warnings",
        True,
        quota,
    )
    assert view["jobs"][0]["status"] == "in_progress"
    step_finished = [e for e in ledger.timeline(new_id) if e["type"] == "StepFinished"][-1]
    assert step_finished["data"]["status"] == "done_with_warnings"
    assert step_finished["data"]["downgraded"] is True
    assert step_finished["data"]["error"] == quota

    report(ledger, new_id, *run_step("deploy", "migrate"))
    report(ledger, new_id, *run_step("deploy", "restart"))
    report(ledger, new_id, *run_step("smoke", "curl"))
    view = ledger.get_task(new_id)
    assert view["jobs"][0]["status"] == "done_with_warnings"
    assert view["status"] == "done_with_warnings"


def test_forced_rerun_still_fails_on_internal_errors(ledger: TaskLedger) -> None:
    old_id = failed_deploy(ledger)
    new_id = ledger.rerun(old_id, author=ALICE, force=True).task["id"]
    internal = {"message": "registry unreachable", "user_facing": False}
    report(
        ledger,
        new_id,
        start("deploy", "push"),
        finish("deploy", "push", Status.FAILED, internal),
    )
    view = ledger.get_task(new_id)
    assert view["jobs"][0]["steps"][0]["status"] == "failed"
    assert view["status"] == "failed"
    # ... and a failed forced rerun can be rerun again.
    again = ledger.rerun(new_id, author=ALICE).task
    assert again["rerun_of"] == new_id
