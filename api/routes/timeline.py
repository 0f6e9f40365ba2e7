"""A task's timeline: every event of its stream, in order, as recorded."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import LedgerDep, Reader
from api.presenters import marked_redacted, wants_system
from api.routes.tasks import READ_PROBLEMS, IncludeSystem
from api.schemas import MAX_VERSION, TimelinePage
from api.visibility import visible_event
from projections.stream_positions import stream_positions

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get("/{task_id}/timeline", response_model=TimelinePage, responses=READ_PROBLEMS)
def get_timeline(
    task_id: UUID,
    principal: Reader,
    ledger: LedgerDep,
    include_system: IncludeSystem = False,
    after_version: Annotated[
        int, Query(ge=0, le=MAX_VERSION, description="Events after this version.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TimelinePage:
    """The task's events in order, with their global positions; page with `after_version`."""
    show_system = wants_system(principal, include_system)
    task, events = ledger.timeline_page(
        task_id, org=principal.org, after_version=after_version, limit=limit
    )
    positions = stream_positions(ledger.recorder, task_id, after_version=after_version, limit=limit)
    shown = []
    for event in events:
        visible = visible_event(event, task, show_system)
        if visible is not None:
            position = positions[event["version"]]
            shown.append({**marked_redacted(visible, event), "position": position})
    next_after = events[-1]["version"] if len(events) == limit else None
    return TimelinePage.model_validate({"events": shown, "next_after_version": next_after})
