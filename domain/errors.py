"""Domain errors: a rule of the task model refused a command.

Application lookups and infrastructure errors live in `domain.application_errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class DomainError(Exception):
    """Raised when a command breaks a rule of the task model."""


@dataclass
class FieldProblem:
    """One reason a request was invalid, located at a field (a path of names and indexes)."""

    loc: tuple[str | int, ...]
    msg: str


class InvalidRequestError(DomainError):
    """Raised when a command's input is malformed: a bad plan, an unknown key, a missing origin."""

    def __init__(self, problems: list[FieldProblem]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))

    @classmethod
    def at(cls, loc: tuple[str | int, ...], msg: str) -> InvalidRequestError:
        return cls([FieldProblem(loc, msg)])


class ConflictError(DomainError):
    """Raised when a command cannot apply to the task in its current state."""

    def __init__(self, reason: str, *, current_status: str | None = None):
        self.reason = reason
        self.current_status = current_status
        super().__init__(reason)


@dataclass
class TransitionTarget:
    job: str | None = None
    step: str | None = None

    def describe(self) -> str:
        if self.job is None:
            return "task"
        if self.step is None:
            return f"job {self.job}"
        return f"step {self.step} of job {self.job}"

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job, "step": self.step}


class TransitionRefusedError(ConflictError):
    """Raised when one transition of a reported list is illegal; nothing of the list applies."""

    def __init__(
        self,
        reason: str,
        *,
        target: TransitionTarget | None = None,
        current: str | None = None,
        requested: str | None = None,
    ):
        self.target = target or TransitionTarget()
        self.current = current
        self.requested = requested
        self.index: int | None = None
        super().__init__(reason, current_status=current)


class UnknownTargetError(InvalidRequestError):
    """Raised when a transition names a job or step the task does not have."""

    def __init__(self, loc: tuple[str | int, ...], msg: str, index: int | None = None):
        self.index = index
        super().__init__([FieldProblem(loc, msg)])
