"""Response shapes of the projection-backed reads: task pages, origin links, the event feed."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from api.schemas import (
    Actor,
    Response,
    TaskSummary,
    hash_field,
    prev_hash_field,
    redacted_field,
)


class TaskPage(Response):
    items: list[TaskSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page."
    )


class OriginChain(Response):
    chain: list[TaskSummary] = Field(description="From the root task down to this task.")


class CausedTasks(Response):
    items: list[TaskSummary] = Field(
        description="Tasks whose origin is this task (all levels with `depth=all`), "
        "level by level, oldest first within a level."
    )


class FeedEvent(Response):
    position: int
    task_id: UUID | None = Field(description="Null for API-key events.")
    stream_id: UUID = Field(description="The task's (or API key's) id.")
    version: int
    type: str
    recorded_at: datetime
    occurred_at: datetime
    actor: Actor
    request_id: str | None = None
    data: dict[str, Any]
    prev_hash: str | None = prev_hash_field()
    hash: str | None = hash_field()
    redacted: bool = redacted_field()


class FeedPage(Response):
    events: list[FeedEvent]
    next_after: int = Field(
        description="Pass as `after` to read on: the last position returned "
        "(or the `after` given, when nothing new was found)."
    )
