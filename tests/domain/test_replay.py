"""Replaying a task's events rebuilds exactly the live task (as the repository does).

`Aggregate.__eq__` compares every attribute, so equality here means the replayed
task has the same jobs, steps, timestamps, failure summary and version.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Snapshot

from domain.context import acting_as
from domain.status import Status
from domain.task import Task
from tests.domain.builders import (
    EXECUTOR,
    USER,
    at,
    executable,
    immediate,
    job,
    names,
    replay,
    report,
    run_steps,
    to,
)

Scenario = Callable[[Task], None]


def succeed(task: Task) -> None:
    run_steps(task, "build", "clone", "compile")
    run_steps(task, "lint", "check")
    run_steps(task, "deploy", "push")
    run_steps(task, "notify", "send")


def fail_and_cascade(task: Task) -> None:
    report(task, to("in_progress", "build", "clone", at=at(1)), now=at(2))
    report(task, to("in_progress", "lint", "check"), now=at(3))
    report(task, to("failed", "build", "clone", error={"message": "boom"}), now=at(4))
    report(task, to("done_with_warnings", "lint", "check"), now=at(5))


def back_off_and_retry(task: Task) -> None:
    run_steps(task, "build", "clone")
    report(task, to("in_progress", "build", "compile"))
    report(task, to("backed_off", "build", retry_at=at(30), error={"message": "lost"}))
    run_steps(task, "build", "clone", "compile")


def cancel_while_running(task: Task) -> None:
    report(task, to("queued"), now=at(1))
    report(task, to("in_progress", "build", "clone"), now=at(2))
    with acting_as(USER):
        task.request_cancel("wrong commit", at(3))
    report(task, to("canceled", "build"), now=at(4))


def hard_timeout(task: Task) -> None:
    run_steps(task, "build", "clone")
    report(task, to("in_progress", "build", "compile"))
    task.time_out(at(3600))


SCENARIOS: dict[str, Scenario] = {
    "created": lambda task: None,
    "succeeded": succeed,
    "failed with cascade": fail_and_cascade,
    "backed off and retried": back_off_and_retry,
    "canceled while running": cancel_while_running,
    "hard timeout": hard_timeout,
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_replayed_task_equals_the_live_task(scenario: Scenario) -> None:
    task = executable()
    events = task.collect_events()
    with acting_as(EXECUTOR):
        scenario(task)
    events += task.collect_events()

    assert replay(events) == task


def test_replayed_forced_downgrade_keeps_the_downgrade() -> None:
    task = executable(job("build", "clone", "compile"), forced=True)
    events = task.collect_events()
    report(task, to("in_progress", "build", "clone"))
    report(task, to("failed", "build", "clone", error={"message": "w", "user_facing": True}))
    events += task.collect_events()

    replayed = replay(events)

    assert replayed == task
    assert replayed.job("build").steps[0].downgraded is True


def test_replayed_immediate_task_equals_the_live_one() -> None:
    task = immediate(labels={"user": "bob"})

    assert replay(task.collect_events()) == task


def test_replayed_rerun_equals_both_live_tasks() -> None:
    old = executable(job("a", "s"))
    old_events = old.collect_events()
    report(old, to("in_progress", "a", "s"), to("failed", "a", "s"))

    new = old.rerun(new_task_id=UUID(int=2), author=USER, force=True, now=at(50))

    assert replay(old_events + old.collect_events()) == old
    assert replay(new.collect_events()) == new


def test_replaying_a_prefix_rebuilds_the_task_as_it_was_then() -> None:
    task = executable()
    events = task.collect_events()
    snapshots = [copy.deepcopy(task)]
    # Record the task after every command of a long, eventful history.
    for command in [
        lambda: report(task, to("queued")),
        lambda: report(task, to("in_progress", "build", "clone")),
        lambda: report(task, to("done", "build", "clone")),
        lambda: report(task, to("in_progress", "lint", "check")),
        lambda: report(task, to("backed_off", "lint")),
        lambda: task.request_cancel(None, at(9)),
        lambda: report(task, to("canceled", "build", "compile")),
    ]:
        command()
        events += task.collect_events()
        snapshots.append(copy.deepcopy(task))

    for snapshot in snapshots:
        assert replay(events[: snapshot.version]) == snapshot
    assert snapshots[-1].status == Status.CANCELED


def test_replay_from_a_snapshot_equals_the_live_task() -> None:
    task = executable()
    run_steps(task, "build", "clone")
    snapshot = Snapshot.take(task)
    task.collect_events()
    report(task, to("in_progress", "build", "compile"), to("failed", "build", "compile"))
    later: list[Any] = task.collect_events()

    rebuilt = snapshot.mutate(None)
    for e in later:
        rebuilt = e.mutate(rebuilt)

    assert rebuilt == task


def test_replay_applies_recorded_facts_without_rechecking_todays_rules() -> None:
    # A history recorded under an older, looser rule: compile started before clone finished.
    task = executable()
    report(task, to("in_progress", "build", "clone"))
    events = task.collect_events()
    assert names(events)[-2] == "StepStarted"
    events[-2] = dataclasses.replace(events[-2], step="compile")

    replayed = replay(events)

    assert replayed.job("build").steps[1].status == Status.IN_PROGRESS
    assert replayed.job("build").steps[0].status == Status.PENDING
