"""The plan of an executable task: its jobs, their steps and the `needs` graph."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from domain.errors import FieldProblem, InvalidRequestError

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
MAX_JOBS = 200
MAX_STEPS_PER_JOB = 200


@dataclass(frozen=True)
class StepPlan:
    key: str
    name: str
    system: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "system": self.system}


@dataclass(frozen=True)
class JobPlan:
    key: str
    name: str
    steps: tuple[StepPlan, ...]
    needs: tuple[str, ...] = ()
    system: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "needs": list(self.needs),
            "system": self.system,
            "steps": [s.as_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobPlan:
        return cls(
            key=data["key"],
            name=data["name"],
            needs=tuple(data.get("needs", ())),
            system=bool(data.get("system", False)),
            steps=tuple(
                StepPlan(s["key"], s["name"], bool(s.get("system", False))) for s in data["steps"]
            ),
        )


@dataclass
class _Problems:
    items: list[FieldProblem] = field(default_factory=list)

    def add(self, msg: str, *loc: str | int) -> None:
        self.items.append(FieldProblem(("jobs", *loc), msg))


def validate_plan(jobs: tuple[JobPlan, ...]) -> None:
    """Refuses a plan that is not a well-formed DAG of jobs with ordered steps."""
    problems = _Problems()
    if not jobs:
        problems.add("an executable task needs at least one job")
    if len(jobs) > MAX_JOBS:
        problems.add(f"at most {MAX_JOBS} jobs")
    seen_jobs: set[str] = set()
    for i, job in enumerate(jobs):
        if not KEY_PATTERN.fullmatch(job.key):
            problems.add(f"job key {job.key!r} must match {KEY_PATTERN.pattern}", i, "key")
        if job.key in seen_jobs:
            problems.add(f"duplicate job key {job.key!r}", i, "key")
        seen_jobs.add(job.key)
        if not job.steps:
            problems.add(f"job {job.key} needs at least one step", i, "steps")
        if len(job.steps) > MAX_STEPS_PER_JOB:
            problems.add(f"at most {MAX_STEPS_PER_JOB} steps per job", i, "steps")
        seen_steps: set[str] = set()
        for j, step in enumerate(job.steps):
            if not KEY_PATTERN.fullmatch(step.key):
                problems.add(
                    f"step key {step.key!r} must match {KEY_PATTERN.pattern}", i, "steps", j, "key"
                )
            if step.key in seen_steps:
                problems.add(
                    f"duplicate step key {step.key!r} in job {job.key}", i, "steps", j, "key"
                )
            seen_steps.add(step.key)
    keys = {job.key for job in jobs}
    for i, job in enumerate(jobs):
        if len(set(job.needs)) != len(job.needs):
            problems.add(f"job {job.key} lists a need twice", i, "needs")
        for j, need in enumerate(job.needs):
            if need == job.key:
                problems.add(f"job {job.key} cannot need itself", i, "needs", j)
            elif need not in keys:
                problems.add(f"job {job.key} needs unknown job {need!r}", i, "needs", j)
    if not problems.items:
        cycle = find_cycle(jobs)
        if cycle:
            index = next(i for i, job in enumerate(jobs) if job.key == cycle[0])
            problems.add(f"needs form a cycle: {' -> '.join(cycle)}", index, "needs")
    if problems.items:
        raise InvalidRequestError(problems.items)


def find_cycle(jobs: tuple[JobPlan, ...]) -> list[str] | None:
    """A cycle in the needs graph as a closed path of job keys, or None for a DAG."""
    needs = {job.key: job.needs for job in jobs}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = fully explored
    path: list[str] = []

    def visit(key: str) -> list[str] | None:
        state[key] = 1
        path.append(key)
        for need in needs.get(key, ()):
            if state.get(need) == 1:
                return [*path[path.index(need) :], need]
            if need not in state and (found := visit(need)):
                return found
        path.pop()
        state[key] = 2
        return None

    for job in jobs:
        if job.key not in state and (found := visit(job.key)):
            return found
    return None


def dependants_of(jobs: tuple[JobPlan, ...] | list[Any], key: str) -> list[str]:
    """Every job that needs `key`, directly or transitively, in plan order."""
    found: set[str] = set()
    frontier = {key}
    while frontier:
        frontier = {j.key for j in jobs if set(j.needs) & frontier and j.key not in found}
        found |= frontier
    return [j.key for j in jobs if j.key in found]
