"""Jobs and steps: the entities inside a task, and a reported transition.

They hold state only; the rules that change them live in `domain.task.Task`.
Statuses are kept as plain strings (what survives a snapshot's JSON round trip)
and read through properties as `Status`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.status import Status


@dataclass
class Step:
    key: str
    name: str
    system: bool = False
    status_value: str = Status.PENDING.value
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None
    downgraded: bool = False

    @property
    def status(self) -> Status:
        return Status(self.status_value)

    @classmethod
    def from_plan(cls, data: dict[str, Any]) -> Step:
        return cls(key=data["key"], name=data["name"], system=bool(data.get("system", False)))


@dataclass
class Job:
    key: str
    name: str
    needs: list[str]
    system: bool
    steps: list[Step]
    status_value: str = Status.PENDING.value
    attempt: int = 0
    retry_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None
    # Why the job ended without running to completion (a need failed, cancel requested, ...).
    reason: str | None = None

    @property
    def status(self) -> Status:
        return Status(self.status_value)

    @classmethod
    def from_plan(cls, data: dict[str, Any]) -> Job:
        return cls(
            key=data["key"],
            name=data["name"],
            needs=list(data.get("needs", [])),
            system=bool(data.get("system", False)),
            steps=[Step.from_plan(s) for s in data["steps"]],
        )

    def plan(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "needs": list(self.needs),
            "system": self.system,
            "steps": [{"key": s.key, "name": s.name, "system": s.system} for s in self.steps],
        }

    def find_step(self, key: str) -> Step | None:
        return next((s for s in self.steps if s.key == key), None)

    def step_index(self, key: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.key == key)

    def open_steps(self) -> list[str]:
        return [s.key for s in self.steps if not s.status.is_terminal]


@dataclass(frozen=True)
class Transition:
    """One reported change: the task (no job), a job, or a step (job and step)."""

    status: Status
    job: str | None = None
    step: str | None = None
    at: datetime | None = None
    error: dict[str, Any] | None = None
    retry_at: datetime | None = None
