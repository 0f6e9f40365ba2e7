"""What verification finds: one problem names one task event (or one checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

# Why an event does not match its chain.
EDITED = "edited"  # its content no longer gives its stored hash, or its successor's prev_hash
REMOVED = "removed"  # this version is missing from its task's stream
REORDERED = "reordered"  # stored under another version than the one it was hashed at
UNDECODABLE = "undecodable"  # its stored state cannot be read at all
UNHASHED = "unhashed"  # stored without a hash


@dataclass(frozen=True)
class Problem:
    """One thing that does not match: a task event (`task_id`, `version`) or a checkpoint."""

    task_id: str | None
    version: int | None
    reason: str
    checkpoint: int | None = None
