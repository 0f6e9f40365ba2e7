"""Scripted histories for the projection tests: every kind of event, through the ledger.

`scripted_history` drives the real application (commands, not hand-made events), so
the projections see exactly what production stores: creations with origins,
labels and silent tasks, progress, failures, back-offs, cancels, timeouts, reruns,
API keys, and idempotency records (which projections must step over).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from domain.application import TaskLedger
from domain.context import acting_as
from domain.idempotency import IdempotentRequest, answer_id
from domain.plan import JobPlan, StepPlan
from domain.status import Status
from domain.work import Transition

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
ALICE = {"id": "u-alice", "name": "Alice", "kind": "user"}
BOB = {"id": "u-bob", "name": "Bob", "kind": "user"}
WODBOT = {"id": "bot-wodbot", "name": "Wodbot", "kind": "system"}
SUPPORT = {"id": "s-sam", "name": "Sam", "kind": "support"}
AUTHORS = (ALICE, BOB, WODBOT, SUPPORT)


@dataclass
class Clock:
    """A clock the test moves: every task's `created_at` is chosen, ties included."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def step(key: str, system: bool = False) -> StepPlan:
    return StepPlan(key, key.title(), system)


def job(key: str, *steps: StepPlan, needs: tuple[str, ...] = (), system: bool = False) -> JobPlan:
    return JobPlan(key, key.title(), tuple(steps), needs, system)


PIPELINE = (
    job("build", step("clone"), step("compile")),
    job("deploy", step("rollout"), needs=("build",)),
    job("sync", step("push", system=True), system=True),
)


def t(status: Status, job: str | None = None, step: str | None = None, **kw: Any) -> Transition:
    return Transition(status=status, job=job, step=step, **kw)


S = Status
RUN_ALL = [
    t(S.IN_PROGRESS, "build", "clone"), t(S.DONE, "build", "clone"),
    t(S.IN_PROGRESS, "build", "compile"), t(S.DONE, "build", "compile"),
    t(S.IN_PROGRESS, "sync", "push"), t(S.DONE, "sync", "push"),
    t(S.IN_PROGRESS, "deploy", "rollout"), t(S.DONE, "deploy", "rollout"),
]  # fmt: skip
FAIL_BUILD = [
    t(S.IN_PROGRESS, "sync", "push"), t(S.DONE, "sync", "push"),
    t(S.IN_PROGRESS, "build", "clone"),
    t(S.FAILED, "build", "clone", error={"message": "exit 2", "user_facing": True}),
]  # fmt: skip
FAIL_SYSTEM = [
    t(S.IN_PROGRESS, "build", "clone"), t(S.DONE, "build", "clone"),
    t(S.IN_PROGRESS, "build", "compile"), t(S.DONE, "build", "compile"),
    t(S.IN_PROGRESS, "deploy", "rollout"), t(S.DONE, "deploy", "rollout"),
    t(S.IN_PROGRESS, "sync", "push"), t(S.FAILED, "sync", "push", error={"message": "registry"}),
]  # fmt: skip
BACK_OFF = [
    t(S.IN_PROGRESS, "build"), t(S.BACKED_OFF, "build", error={"message": "busy"}),
    t(S.IN_PROGRESS, "build", "clone"),
]  # fmt: skip


@dataclass
class History:
    """What a script created: task ids (in creation order) and everything it touched."""

    tasks: list[UUID] = field(default_factory=list)
    keys: list[UUID] = field(default_factory=list)
    last_position: int = 0

    def note(self, position: int | None) -> None:
        if position:
            self.last_position = max(self.last_position, position)


def create(
    ledger: TaskLedger,
    history: History,
    *,
    kind: str = "executable",
    author: dict[str, Any] = ALICE,
    request: IdempotentRequest | None = None,
    **fields: Any,
) -> UUID:
    fields.setdefault("type", "app.deploy")
    fields.setdefault("title", "Deploy shop")
    if kind == "executable":
        fields.setdefault("jobs", PIPELINE)
    with acting_as(author):
        written = ledger.create_task(
            org=fields.pop("org", "acme"), kind=kind, author=author, request=request, **fields
        )
    history.tasks.append(written.task["id"])
    history.note(written.position)
    return written.task["id"]  # type: ignore[no-any-return]


def report(ledger: TaskLedger, history: History, task_id: UUID, items: list[Transition]) -> None:
    for item in items:
        history.note(ledger.report(task_id, [item]).position)


def scripted_history(
    ledger: TaskLedger, *, tasks: int, seed: int = 7, clock: Clock | None = None
) -> History:
    """About 7 events per task on average, of every kind, reproducibly (`seed`)."""
    rng = random.Random(seed)
    history = History()

    def cancel_pending(task_id: UUID) -> None:
        history.note(ledger.cancel(task_id, "not today").position)

    def cancel_running(task_id: UUID) -> None:
        report(ledger, history, task_id, [t(S.IN_PROGRESS, "build", "clone")])
        history.note(ledger.cancel(task_id, "stop").position)
        report(ledger, history, task_id, [t(S.CANCELED, "build", "clone")])

    def time_out(task_id: UUID) -> None:
        report(ledger, history, task_id, [t(S.IN_PROGRESS, "build", "clone")])
        written = ledger.time_out(task_id, now=ledger.clock() + timedelta(days=30))
        history.note(written.position if written else None)

    def run(items: list[Transition]) -> Callable[[UUID], None]:
        return lambda task_id: report(ledger, history, task_id, items)

    scenarios: list[Callable[[UUID], None]] = [
        run(RUN_ALL),
        run(FAIL_BUILD),
        run(FAIL_SYSTEM),
        run(BACK_OFF),
        cancel_pending,
        cancel_running,
        time_out,
        run([]),  # stays pending
    ]
    for n in range(tasks):
        if clock is not None and rng.random() < 0.8:  # the rest share a created_at
            clock.tick(rng.choice((0.001, 1, 60)))
        origin = rng.choice(history.tasks) if history.tasks and rng.random() < 0.3 else None
        if origin is not None and ledger.get_task(origin)["org"] != "acme":
            origin = None
        fields: dict[str, Any] = {
            "author": rng.choice(AUTHORS),
            "project": rng.choice(("shop", "blog", None)),
            "silent": rng.random() < 0.15,
            "labels": {"app": rng.choice(("shop", "blog")), "env": rng.choice(("prod", "dev"))},
            "origin_task_id": origin,
            "org": "evil" if origin is None and rng.random() < 0.1 else "acme",
        }
        if n % 17 == 5:
            request = IdempotentRequest(answer_id("acme", "test", f"k{seed}-{n}"), f"h{n}", 201)
            fields["request"] = request
        if rng.random() < 0.2:
            create(ledger, history, kind="immediate", type="project.member.add", **fields)
            continue
        fields["type"] = rng.choice(("app.deploy", "app.build"))
        task_id = create(ledger, history, **fields)
        scenario = rng.randrange(len(scenarios))
        scenarios[scenario](task_id)
        status = ledger.get_task(task_id)["status"]
        if status in ("failed", "canceled", "timed_out") and rng.random() < 0.6:
            rerun = ledger.rerun(
                task_id, author=ALICE, force=rng.random() < 0.5, new_task_id=uuid4()
            )
            history.tasks.append(rerun.task["id"])
            history.note(rerun.position)
        if n % 23 == 11:
            view, _token, position = ledger.issue_key(org="acme", role="reader", name=f"k{n}")
            history.keys.append(view["id"])
            history.note(position)
            if n % 46 == 11:
                ledger.revoke_key(view["id"])
                history.note(ledger.recorder.max_notification_id())
    return history
