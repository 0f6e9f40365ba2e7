"""The data the figures read and write, saved through the library (`TaskLedger`) in
large transactions: a realistic feed for the list queries, two long tasks, and fresh
tasks for the ingest clients to report on. Nothing here goes through HTTP.

The feed is skewed on purpose: for each list filter the value the benchmark asks for
is common enough (a CI bot, a busy project, a deploy wave that caused many tasks, a
flaky task rerun many times) that page 100 exists, as it would for a busy org.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from benchkit.progress import Progress
from domain.application import TaskLedger
from domain.plan import JobPlan, StepPlan
from domain.status import Status
from domain.task import Task
from domain.work import Transition

ORG = "acme"
NOW = datetime.now(UTC).replace(microsecond=0)
DAYS = 30
S = Status
PLAN = (
    JobPlan("build", "Build", (StepPlan("compile", "Compile"), StepPlan("test", "Test"))),
    JobPlan("deploy", "Deploy", (StepPlan("rollout", "Roll out"),), needs=("build",)),
    JobPlan("verify", "Verify", (StepPlan("smoke", "Smoke test"),), needs=("deploy",)),
)
RUN_BUILD = [
    Transition(S.QUEUED),
    Transition(S.IN_PROGRESS, "build", "compile"),
    Transition(S.DONE, "build", "compile"),
    Transition(S.IN_PROGRESS, "build", "test"),
]
SUCCESS = [
    *RUN_BUILD,
    Transition(S.DONE, "build", "test"),
    Transition(S.IN_PROGRESS, "deploy", "rollout"),
    Transition(S.DONE, "deploy", "rollout"),
    Transition(S.IN_PROGRESS, "verify", "smoke"),
    Transition(S.DONE, "verify", "smoke"),
]
FAILURE = [*RUN_BUILD, Transition(S.FAILED, "build", "test", error={"message": "exit 2"})]
# (share, transitions) of executable tasks.
OUTCOMES: list[tuple[float, list[Transition]]] = [
    (0.05, []),
    (0.05, [Transition(S.QUEUED)]),
    (0.10, RUN_BUILD),
    (0.60, SUCCESS),
    (0.15, FAILURE),
    (0.05, [Transition(S.QUEUED), Transition(S.CANCELED, "build")]),
]
AUTHORS = (
    [{"id": "bot-ci", "name": "CI", "kind": "system"}] * 60
    + [{"id": f"bot-{n}", "name": f"Bot {n}", "kind": "system"} for n in range(10)]
    + [{"id": f"u-{n}", "name": f"User {n}", "kind": "user"} for n in range(110)]
    + [{"id": f"s-{n}", "name": f"Support {n}", "kind": "support"} for n in range(20)]
)
PROJECTS = ["shop"] * 30 + [f"project-{n}" for n in range(60)] + [None] * 10
TYPES = ["app.deploy"] * 35 + ["app.build"] * 25 + ["project.member.add"] * 15
TYPES += ["db.backup"] * 15 + ["dns.update"] * 10
ENVS = ["prod"] * 4 + ["dev"] * 3 + ["qa"] * 3
SAVE_BATCH = 500


@dataclass
class Dataset:
    """What was loaded, for the figures to address."""

    tasks: int = 0
    events: int = 0
    wave: UUID | None = None  # the origin of a quarter of the feed
    flaky: UUID | None = None  # a failed task with many reruns
    read_task: UUID | None = None  # the task whose GET is measured
    small_task: UUID | None = None  # a task of SMALL_TASK_EVENTS, read at one client too
    timeline_task: UUID | None = None  # the long task whose timeline is measured
    read_task_version: int = 0
    timeline_task_version: int = 0
    # Per client: its tasks, each a plan of INGEST_JOBS x INGEST_STEPS fresh steps.
    single_tasks: list[list[str]] = field(default_factory=list)
    batch_tasks: list[list[str]] = field(default_factory=list)


INGEST_JOBS, INGEST_STEPS = 10, 10
INGEST_PLAN = tuple(
    JobPlan(f"j{j}", f"Job {j}", tuple(StepPlan(f"s{s}", f"Step {s}") for s in range(INGEST_STEPS)))
    for j in range(INGEST_JOBS)
)


def ingest_transitions() -> Iterator[dict[str, str]]:
    """Every transition an ingest task accepts, in an order it accepts them, as JSON."""
    for j in range(INGEST_JOBS):
        for s in range(INGEST_STEPS):
            yield {"job": f"j{j}", "step": f"s{s}", "status": "in_progress"}
            yield {"job": f"j{j}", "step": f"s{s}", "status": "done"}


TRANSITIONS_PER_INGEST_TASK = 2 * INGEST_JOBS * INGEST_STEPS


class Loader:
    """Builds tasks through the domain (its rules and events) and saves them in bulk.

    Automatic snapshots are off while loading (a 5,000-event task would otherwise be
    snapshotted 100 times, each a full encode of the task); `snapshot_heads()` then
    takes the one snapshot the service would hold for each long task: at the last
    multiple of the interval.
    """

    SNAPSHOT_INTERVAL = 50

    def __init__(self, ledger: TaskLedger, seed: int = 7):
        self.ledger = ledger
        ledger.snapshotting_intervals = {}  # type: ignore[misc]
        self._long: dict[UUID, int] = {}
        self.rng = random.Random(seed)
        self.data = Dataset()
        self._pending: list[Task] = []

    def _add(self, task: Task) -> None:
        self._pending.append(task)
        if len(self._pending) >= SAVE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.data.events += sum(len(t.pending_events) for t in self._pending)
            self.ledger.save(*self._pending)
            self._pending = []

    def _task(self, n: int, **overrides: Any) -> Task:
        rng = self.rng
        immediate = rng.random() < 0.2 and "jobs" not in overrides
        fields: dict[str, Any] = {
            "task_id": uuid4(),
            "org": ORG,
            "type": rng.choice(TYPES),
            "title": f"Task {n}",
            "kind": "immediate" if immediate else "executable",
            "author": rng.choice(AUTHORS),
            "now": NOW - timedelta(seconds=rng.uniform(60, DAYS * 86400)),
            "project": rng.choice(PROJECTS),
            "silent": rng.random() < 0.1,
            "labels": {"app": f"app-{rng.randrange(50)}", "env": rng.choice(ENVS)},
            "jobs": () if immediate else PLAN,
        }
        if fields["author"]["id"] == "bot-ci" and rng.random() < 0.6:
            fields["type"] = "app.deploy"  # the CI bot mostly deploys
        fields.update(overrides)
        return Task.create(**fields)

    def _run(self, task: Task, transitions: list[Transition]) -> None:
        if transitions:
            task.report(transitions, task.created_at + timedelta(seconds=self.rng.uniform(1, 60)))

    def feed(self, tasks: int, reruns: int) -> None:
        """`tasks` tasks of one org over 30 days; `reruns` of them rerun one flaky task."""
        rng = self.rng
        weights = [w for w, _ in OUTCOMES]
        bar = Progress("feed tasks", tasks, "tasks")
        wave = self._task(0, jobs=PLAN, now=NOW - timedelta(days=DAYS + 1), type="app.deploy")
        flaky = self._task(1, jobs=PLAN, now=NOW - timedelta(days=DAYS + 1), silent=False)
        self._run(wave, SUCCESS)
        self._run(flaky, FAILURE)
        self.data.wave, self.data.flaky = wave.id, flaky.id
        self._add(wave)
        recent: list[UUID] = []
        rerun_every = max(1, (tasks - 2) // max(reruns, 1))
        made_reruns = 0
        for n in range(2, tasks):
            if made_reruns < reruns and n % rerun_every == 0:
                when = NOW - timedelta(seconds=rng.uniform(60, DAYS * 86400))
                task = flaky.rerun(
                    new_task_id=uuid4(), author=rng.choice(AUTHORS), force=False, now=when
                )
                made_reruns += 1
            else:
                roll = rng.random()
                origin = None
                if roll < 0.25:
                    origin = wave.id
                elif roll < 0.35 and recent:
                    origin = rng.choice(recent)
                task = self._task(n, origin_task_id=origin)
            if task.kind == "executable" and task.version == 1:
                [outcome] = rng.choices([t for _, t in OUTCOMES], weights)
                self._run(task, outcome)
            if len(recent) < 1000:
                recent.append(task.id)
            self._add(task)
            # The flaky task's rerun records are saved with the batch of the reruns.
            if flaky.pending_events and len(self._pending) >= SAVE_BATCH - 1:
                self._add(flaky)
            bar.advance(1, f"{self.data.events:,} events")
        self._add(flaky)
        self.flush()
        self._long[flaky.id] = flaky.version
        bar.advance(2)
        bar.close()
        self.data.tasks += tasks

    def long_task(self, events: int, title: str) -> tuple[UUID, int]:
        """A flaky long-running task with about `events` events: 10 jobs of 10 steps,
        each job attempted again and again (nine steps done, the tenth started, then
        backed off), the way an executor's retries pile up history."""
        task = self._task(
            0,
            jobs=INGEST_PLAN,
            title=title,
            now=NOW - timedelta(hours=3),
            labels={"env": "prod"},
            silent=False,
            timeout_seconds=86400,
        )
        at = NOW - timedelta(hours=3)
        while task.version < events:
            for job in INGEST_PLAN:
                if task.version >= events:
                    break
                attempt: list[Transition] = []
                for n, step in enumerate(job.steps):
                    attempt.append(Transition(S.IN_PROGRESS, job.key, step.key))
                    if n < len(job.steps) - 1:
                        attempt.append(Transition(S.DONE, job.key, step.key))
                at += timedelta(seconds=1)
                attempt.append(
                    Transition(S.BACKED_OFF, job.key, retry_at=at + timedelta(seconds=1))
                )
                task.report(attempt, at)
        version = task.version
        self.data.events += version
        self.data.tasks += 1
        self.ledger.save(task)
        self._long[task.id] = version
        return task.id, version

    def ingest_tasks(self, clients: int, per_client: int, label: str) -> list[list[str]]:
        """Fresh tasks for the ingest clients: each client reports on its own tasks only."""
        bar = Progress(label, clients * per_client, "tasks")
        result: list[list[str]] = []
        for _ in range(clients):
            mine = []
            for _ in range(per_client):
                task = self._task(
                    0,
                    jobs=INGEST_PLAN,
                    type="bench.ingest",
                    now=NOW,
                    silent=True,
                    timeout_seconds=86400,
                )
                mine.append(str(task.id))
                self._add(task)
                bar.advance()
            result.append(mine)
        self.flush()
        bar.close()
        self.data.tasks += clients * per_client
        return result

    def snapshot_heads(self) -> None:
        for task_id, version in self._long.items():
            at = version - version % self.SNAPSHOT_INTERVAL
            if at:
                self.ledger.take_snapshot(task_id, version=at)
