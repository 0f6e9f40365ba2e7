"""Creating tasks: immediate and executable, silent, with an origin in the same org."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.application import TaskLedger
from domain.application_errors import TaskNotFoundError
from domain.errors import ConflictError, InvalidRequestError, TransitionRefusedError

from .support import (
    ALICE,
    create_executable,
    create_immediate,
    event_types,
    job,
    queued,
    report,
    start,
)


def test_immediate_task_is_done_when_recorded(ledger: TaskLedger) -> None:
    written = create_immediate(ledger, project="shop", labels={"user": "bob"})

    task = ledger.get_task(written.task["id"])
    assert task == written.task | {"duration_seconds": task["duration_seconds"]}
    assert task["status"] == "done"
    assert task["kind"] == "immediate"
    assert task["jobs"] == []
    assert task["duration_seconds"] is None
    assert task["timeout_seconds"] is None
    assert task["finished_at"] == task["created_at"]
    assert task["author"] == ALICE
    assert (task["project"], task["labels"]) == ("shop", {"user": "bob"})
    assert event_types(ledger, task["id"]) == ["TaskCreated"]
    assert written.position is not None
    # Nothing can change it.
    with pytest.raises(TransitionRefusedError):
        report(ledger, task["id"], queued())
    with pytest.raises(ConflictError):
        ledger.cancel(task["id"])
    with pytest.raises(ConflictError):
        ledger.rerun(task["id"], author=ALICE)


def test_immediate_task_has_no_jobs_or_timeout(ledger: TaskLedger) -> None:
    with pytest.raises(InvalidRequestError, match="jobs"):
        create_immediate(ledger, jobs=[job("build", "compile")])
    with pytest.raises(InvalidRequestError, match="timeout_seconds"):
        create_immediate(ledger, timeout_seconds=60)


def test_executable_task_is_created_pending_with_default_timeout(ledger: TaskLedger) -> None:
    task = ledger.get_task(create_executable(ledger, job("build", "compile")))
    assert (task["status"], task["kind"]) == ("pending", "executable")
    assert task["timeout_seconds"] == 3600
    assert task["duration_seconds"] is None
    assert task["version"] == 1


def test_silent_task_is_recorded_like_any_other(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("sync", "pull"), silent=True)
    report(ledger, task_id, queued(), start("sync", "pull"))
    task = ledger.get_task(task_id)
    assert task["silent"] is True
    assert task["status"] == "in_progress"
    created = ledger.timeline(task_id)[0]
    assert created["data"]["silent"] is True
    silent_immediate = create_immediate(ledger, silent=True).task
    assert ledger.get_task(silent_immediate["id"])["silent"] is True


def test_task_names_its_origin_in_the_same_org(ledger: TaskLedger) -> None:
    origin = create_immediate(ledger, type="app.create", title="Create shop").task["id"]
    deploy = create_executable(ledger, job("deploy", "push"), origin_task_id=origin)
    build = create_executable(ledger, job("build", "compile"), origin_task_id=deploy)
    assert ledger.get_task(deploy)["origin_task_id"] == origin
    assert ledger.get_task(build)["origin_task_id"] == deploy


@pytest.mark.parametrize("where", ["missing", "other org"])
def test_origin_must_exist_in_the_same_org(ledger: TaskLedger, where: str) -> None:
    missing = where == "missing"
    origin = uuid4() if missing else create_immediate(ledger, org="globex").task["id"]
    position = ledger.recorder.max_notification_id()

    with pytest.raises(InvalidRequestError) as refused:
        create_executable(ledger, job("deploy", "push"), org="acme", origin_task_id=origin)

    assert [p.loc for p in refused.value.problems] == [("origin_task_id",)]
    assert str(origin) in refused.value.problems[0].msg
    assert ledger.recorder.max_notification_id() == position


def test_task_id_can_be_chosen_once(ledger: TaskLedger) -> None:
    task_id = uuid4()
    written = create_executable(ledger, job("build", "compile"), task_id=task_id)
    assert written == task_id
    with pytest.raises(ConflictError, match="already exists"):
        create_executable(ledger, job("build", "compile"), task_id=task_id)
    assert ledger.get_task(task_id)["version"] == 1


def test_task_of_another_org_is_not_found(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile"), org="acme")
    assert ledger.get_task(task_id, org="acme")["org"] == "acme"
    assert ledger.get_task(task_id, org="*")["org"] == "acme"
    with pytest.raises(TaskNotFoundError):
        ledger.get_task(task_id, org="globex")
    with pytest.raises(TaskNotFoundError):
        ledger.timeline(task_id, org="globex")
    with pytest.raises(TaskNotFoundError):
        ledger.report(task_id, [queued()], org="globex")
    with pytest.raises(TaskNotFoundError):
        ledger.get_task(uuid4())
