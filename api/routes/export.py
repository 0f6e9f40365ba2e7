"""Export: every event of an org as NDJSON, streamed (auditors and admins).

Read from the org event index, a page at a time, so an export of millions of events
runs in constant memory. Silent tasks and system work are included: an export is
the audit record. Without `until`, an export ends at the position the index had
reached when it began (sent as `X-Export-Until`), so it is a consistent cut. The
last line is a checkpoint signed at export time over the heads of the exported task
chains, with the public key: the file checks offline (`integrity.bundle`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import Auditor, ServicesDep
from api.errors import INVALID_QUERY, NOT_YET_VISIBLE, declared
from api.projection_reads import EventFeedAt
from api.schemas import MAX_VERSION, ORG_PATTERN
from domain.resilient_writes import utc_now
from integrity.bundle import ExportHeads
from integrity.signing import SigningKey
from projections.event_feed import OrgEventView

router = APIRouter(prefix="/v1/export", tags=["export"])

EXPORT_PAGE = 1000


async def ndjson(
    view: OrgEventView, org: str, after: int, until: int, key: SigningKey
) -> AsyncIterator[str]:
    heads = ExportHeads()
    start = after
    while True:
        rows = await run_in_threadpool(
            view.events, org, after=after, until=until, limit=EXPORT_PAGE, include_system=True
        )
        if rows:
            for row in rows:
                heads.observe(orjson.loads(row.entry))
            yield "".join(f"{row.entry}\n" for row in rows)
            after = rows[-1].position
        if len(rows) < EXPORT_PAGE:
            break
    yield heads.checkpoint_line(
        org=org, after=start, until=until, signer=key, public_key=key.public, now=utc_now()
    )


@router.get(
    "",
    response_class=StreamingResponse,
    responses={
        403: declared(
            "The token is not an auditor's or admin's, or `org` names an org other than its own"
        ),
        422: INVALID_QUERY,
        503: NOT_YET_VISIBLE,
        200: {
            "content": {"application/x-ndjson": {}},
            "description": "One event (a feed entry) per line, in global order; the last "
            'line is `{"checkpoint": {...}, "public_key", "algorithm"}`, signed now over '
            "the heads of the exported task chains (check it with `tasktrail verify --bundle`).",
        },
    },
)
async def export(
    principal: Auditor,
    view: EventFeedAt,
    services: ServicesDep,
    org: Annotated[
        str | None,
        Query(
            pattern=ORG_PATTERN,
            description="The org to export (platform tokens only, required there).",
        ),
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_VERSION, description="Only events after this position.")
    ] = 0,
    until: Annotated[
        int | None,
        Query(ge=0, le=MAX_VERSION, description="Only events up to this position (inclusive)."),
    ] = None,
) -> StreamingResponse:
    """Every event of the org (silent tasks and system work included), as NDJSON."""
    scope = principal.org_for(org)
    key = services.signing_key
    assert key is not None, "the services load the signing key at start"
    if until is None:
        until = await run_in_threadpool(view.progress.refresh)
    filename = f"tasktrail-{scope}-{after}-{until}.ndjson"
    return StreamingResponse(
        ndjson(view, scope, after, until, key),
        media_type="application/x-ndjson",
        headers={
            "X-Export-Until": str(until),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )
