"""Turn plain views from the application into response schemas for one principal."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from api.deps import Principal
from api.schemas import ApiKeyCreated, TaskPublic
from api.visibility import visible_task
from domain.application import TaskLedger
from projections.stream_positions import stream_positions


def position_of(ledger: TaskLedger, task_id: UUID, version: int) -> int | None:
    positions = stream_positions(ledger.recorder, task_id, after_version=version - 1, limit=1)
    return positions.get(version)


def present_task(
    ledger: TaskLedger,
    view: dict[str, Any],
    *,
    position: int | None = None,
    include_system: bool = False,
) -> TaskPublic:
    """The task as this reader may see it, with its position (looked up when not known)."""
    if position is None:
        position = position_of(ledger, view["id"], view["version"])
    return TaskPublic.model_validate({**visible_task(view, include_system), "position": position})


def wants_system(principal: Principal, include_system: bool) -> bool:
    if include_system:
        principal.require("see_system")
    return include_system


def present_new_key(view: dict[str, Any], token: str | None, position: int | None) -> ApiKeyCreated:
    return ApiKeyCreated.model_validate({**view, "token": token, "position": position})
