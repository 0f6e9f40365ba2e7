"""The org's event feed: a page at a time, or live as Server-Sent Events.

Both read the org event index projection. The stream sends each event as one SSE
message whose `id` is its global position; a client that reconnects with
`Last-Event-ID` (or `?after=`) gets exactly the events after it: the index is
written in position order, a batch and its position in one transaction, so a read
never sees a later event without every earlier one. Comment lines keep idle
connections open through proxies. The stream asks again whether its token works at
every heartbeat (at least every few seconds) and ends once it is revoked: a reconnect
then gets `401`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import REVOKED_MESSAGE, Reader, ServicesDep, TokenCheck, TokenCheckDep
from api.errors import ProblemError
from api.feed_schemas import FeedEvent, FeedPage
from api.presenters import marked_redacted, wants_system
from api.projection_reads import READ_PROBLEMS, EventFeedAt, IncludeSystem
from api.schemas import MAX_VERSION, ORG_PATTERN
from api.visibility import visible_event
from projections.event_feed import FeedRow, OrgEventView
from projections.sql import dumps

router = APIRouter(prefix="/v1/events", tags=["event feed"])

STREAM_PAGE = 500
Org = Annotated[
    str | None,
    Query(
        pattern=ORG_PATTERN,
        description="The org to read (platform tokens only, and required there).",
    ),
]
After = Annotated[
    int, Query(ge=0, le=MAX_VERSION, description="Only events after this global position.")
]
TaskFilter = Annotated[UUID | None, Query(description="Only this task's events.")]
TypeFilter = Annotated[
    str | None, Query(max_length=200, description="Only events of this type (e.g. TaskFinished).")
]


def visible_entry(row: FeedRow, include_system: bool) -> dict[str, Any] | None:
    """The entry as this reader may see it (None: wholly about system work)."""
    entry = json.loads(row.entry)
    if include_system:
        return entry
    visible = visible_event(entry, row.shape or {"jobs": []}, False)
    return None if visible is None else marked_redacted(visible, entry)


def entry_text(row: FeedRow, include_system: bool) -> str | None:
    """The entry as this reader may see it, as JSON text (None: wholly about system work)."""
    if include_system or row.shape is None:
        return row.entry
    visible = visible_entry(row, include_system)
    return None if visible is None else dumps(visible)


def _entries(rows: list[FeedRow], include_system: bool) -> list[dict[str, Any]]:
    shown = (visible_entry(row, include_system) for row in rows)
    return [entry for entry in shown if entry is not None]


@router.get("", response_model=FeedPage, responses=READ_PROBLEMS)
def list_events(
    principal: Reader,
    view: EventFeedAt,
    org: Org = None,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    task_id: TaskFilter = None,
    type: TypeFilter = None,
    include_system: IncludeSystem = False,
) -> FeedPage:
    """The org's events in global order, after a position; page on with `next_after`."""
    show_system = wants_system(principal, include_system)
    rows = view.events(
        principal.org_for(org),
        after=after,
        limit=limit,
        task_id=task_id,
        type=type,
        include_system=show_system,
    )
    return FeedPage(
        events=[FeedEvent.model_validate(e) for e in _entries(rows, show_system)],
        next_after=rows[-1].position if rows else after,
    )


async def follow(
    view: OrgEventView,
    org: str,
    *,
    after: int,
    task_id: UUID | None,
    type: str | None,
    include_system: bool,
    heartbeat: float,
    token: TokenCheck,
) -> AsyncIterator[str]:
    """SSE messages: every event of the org after `after`, then each new one as it lands,
    until the token is revoked."""
    yield "retry: 2000\n\n"
    last_sent = time.monotonic()
    while True:
        if await token.revoked():
            yield REVOKED_MESSAGE
            return
        # Rows up to the position read first are all visible to the query after it.
        reached = await run_in_threadpool(view.progress.refresh)
        rows = await run_in_threadpool(
            view.events,
            org,
            after=after,
            limit=STREAM_PAGE,
            task_id=task_id,
            type=type,
            include_system=include_system,
        )
        for row in rows:
            text = entry_text(row, include_system)
            if text is not None:
                yield f"id: {row.position}\ndata: {text}\n\n"
                last_sent = time.monotonic()
            after = row.position
        if len(rows) == STREAM_PAGE:
            continue
        idle = time.monotonic() - last_sent
        if idle >= heartbeat:
            yield ": heartbeat\n\n"
            last_sent = time.monotonic()
            idle = 0.0
        await view.progress.wait_beyond(reached, timeout=min(heartbeat - idle, token.due_in()))


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        **READ_PROBLEMS,
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
    },
)
async def stream_events(
    principal: Reader,
    view: EventFeedAt,
    services: ServicesDep,
    token: TokenCheckDep,
    org: Org = None,
    after: After = 0,
    task_id: TaskFilter = None,
    type: TypeFilter = None,
    include_system: IncludeSystem = False,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=20,
            description="Resume after this event (its position).",
        ),
    ] = None,
) -> StreamingResponse:
    """The org's events live, as Server-Sent Events whose `id` is the global position."""
    show_system = wants_system(principal, include_system)
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise ProblemError(
                422,
                "Invalid request",
                "Last-Event-ID must be a position (a non-negative integer)",
                errors=[{"loc": ["header", "Last-Event-ID"], "msg": "not a position"}],
            )
        after = max(after, int(last_event_id))
    messages = follow(
        view,
        principal.org_for(org),
        after=after,
        task_id=task_id,
        type=type,
        include_system=show_system,
        heartbeat=services.settings.sse_heartbeat_seconds,
        token=token,
    )
    return StreamingResponse(
        messages,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
