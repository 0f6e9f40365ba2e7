"""Views of a task now are built from the cached task without copying it first:
what a caller does with a view must never reach the next read."""

from __future__ import annotations

from domain.application import TaskLedger
from tests.application.support import create_executable, job, queued, report, run_step


def test_changing_a_view_does_not_change_the_next_read(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile", "package"), labels={"env": "ci"})
    # Finished, so its durations do not move between the reads compared.
    report(ledger, task_id, queued(), *run_step("build", "compile"), *run_step("build", "package"))
    before = ledger.get_task(task_id)
    assert before["status"] == "done"

    view = ledger.get_task(task_id)
    view["labels"]["env"] = "prod"
    view["author"]["id"] = "mallory"
    view["jobs"][0]["needs"].append("other")
    view["jobs"][0]["steps"][0]["status"] = "failed"
    view["jobs"].clear()

    assert ledger.get_task(task_id) == before
    task, _ = ledger.timeline_page(task_id)
    assert task == before


def test_timeline_page_is_the_task_now_and_its_events(ledger: TaskLedger) -> None:
    task_id = create_executable(ledger, job("build", "compile"))
    report(ledger, task_id, queued(), *run_step("build", "compile"))

    task, events = ledger.timeline_page(task_id, after_version=1, limit=2)

    assert task["version"] == ledger.get_task(task_id)["version"]
    assert [e["version"] for e in events] == [2, 3]
    assert events == ledger.timeline(task_id, after_version=1, limit=2)
