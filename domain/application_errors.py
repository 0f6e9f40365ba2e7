"""Application errors: a lookup found nothing, or the store could not do what was asked.

The middle of the three tiers: domain rule violations are in `domain.errors`, and
the library's own `IntegrityError` (a concurrent write) is handled inside the
applications, which turn what is left of it into the errors below.
"""

from __future__ import annotations

from domain.errors import ConflictError


class TaskNotFoundError(Exception):
    """Raised when no task has the given id (in the caller's org)."""


class ApiKeyNotFoundError(Exception):
    """Raised when no API key has the given id (in the caller's org)."""


class VersionMismatchError(ConflictError):
    """Raised when a command expected another version of the task than the stored one."""


class ContentionError(Exception):
    """Raised when concurrent writers kept changing a stream for every retry of a command."""


class StoreUnavailableError(Exception):
    """Raised when the event store cannot be reached; a write that raises it stored nothing."""


class WriteOutcomeUnknownError(StoreUnavailableError):
    """Raised when the store failed during a write and could not be asked whether it was stored.

    Retrying is safe for reports and cancels (a repeated transition is a no-op); a
    create should be retried with the same task id (or Idempotency-Key).
    """


class AnswerUnavailableError(StoreUnavailableError):
    """Raised when a write was stored but the store failed while its answer was read back.

    A retry with the same Idempotency-Key gets that answer, and stores nothing again.
    """
