"""The activity feed (`GET /v1/tasks`) and origin links, read from the task list projection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, Field

from api.deps import LedgerDep, Reader, ServicesDep
from api.errors import (
    INVALID_QUERY,
    NO_SUCH_TASK,
    NOT_YET_VISIBLE,
    ProblemError,
    Responses,
    declared,
)
from api.feed_schemas import CausedTasks, OriginChain, TaskPage
from api.presenters import wants_system
from api.projection_reads import (
    IncludeSystem,
    TaskListAt,
    not_yet_visible,
    wait_for_position,
)
from api.schemas import ORG_PATTERN, TaskSummary
from api.visibility import visible_failure
from domain.status import Status
from projections.stream_positions import last_position
from projections.task_list import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    InvalidCursorError,
    TaskListView,
    TaskQuery,
    summary,
)

router = APIRouter(prefix="/v1/tasks", tags=["task list"])

LIST_PROBLEMS: Responses = {
    403: declared(
        "`include_system` from a role that may not see system work, or `org` names an org "
        "other than the token's"
    ),
    422: INVALID_QUERY,
    503: NOT_YET_VISIBLE,
}
LINK_PROBLEMS: Responses = {
    403: declared("`include_system` from a role that may not see system work"),
    404: NO_SUCH_TASK,
    422: INVALID_QUERY,
    503: NOT_YET_VISIBLE,
}
# `key:value`: the longest label key (100) and value (500) a task can have, and the colon.
MAX_LABEL_FILTER = 601
Text = Annotated[str | None, Query(min_length=1, max_length=200)]
Org = Annotated[
    str | None,
    Query(
        pattern=ORG_PATTERN,
        description="The org to read (platform tokens only, and required there).",
    ),
]


def _invalid(param: str, message: str) -> ProblemError:
    return ProblemError(
        422, "Invalid request", message, errors=[{"loc": ["query", param], "msg": message}]
    )


def present(rows: list[dict[str, Any]], include_system: bool) -> list[TaskSummary]:
    """Rows as summaries for this reader: system failure details only when asked for."""
    now = datetime.now(UTC)
    shown = []
    for row in rows:
        visible = summary(row, now)
        visible["failure"] = visible_failure(visible.get("failure"), include_system)
        shown.append(TaskSummary.model_validate(visible))
    return shown


def _labels(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        key, sep, label = value.partition(":")
        if not sep or not key:
            raise _invalid("label", f"label filter {value!r} must be key:value")
        pairs.append((key, label))
    return tuple(pairs)


@router.get("", response_model=TaskPage, responses=LIST_PROBLEMS)
def list_tasks(
    principal: Reader,
    view: TaskListAt,
    org: Org = None,
    project: Text = None,
    status: Annotated[
        list[Status] | None, Query(max_length=len(Status), description="Repeatable.")
    ] = None,
    type: Text = None,
    kind: Literal["immediate", "executable"] | None = None,
    author_id: Text = None,
    author_kind: Literal["user", "system", "support"] | None = None,
    origin_task_id: UUID | None = None,
    rerun_of: UUID | None = None,
    label: Annotated[
        list[Annotated[str, Field(max_length=MAX_LABEL_FILTER)]] | None,
        Query(max_length=32, description="`key:value`; repeatable (all must match)."),
    ] = None,
    created_after: AwareDatetime | None = None,
    created_before: AwareDatetime | None = None,
    include_silent: bool = False,
    include_system: IncludeSystem = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=500, description="From `next_cursor`.")] = None,
) -> TaskPage:
    """The activity feed: the org's tasks, newest first, filtered, a page at a time."""
    show_system = wants_system(principal, include_system)
    try:
        after = Cursor.decode(cursor) if cursor else None
    except InvalidCursorError as error:
        raise _invalid("cursor", str(error)) from None
    query = TaskQuery(
        org=principal.org_for(org),
        project=project,
        statuses=tuple(s.value for s in status or ()),
        type=type,
        kind=kind,
        author_id=author_id,
        author_kind=author_kind,
        origin_task_id=origin_task_id,
        rerun_of=rerun_of,
        labels=_labels(label or []),
        created_after=created_after,
        created_before=created_before,
        include_silent=include_silent,
        limit=limit,
        after=after,
    )
    page = view.list_tasks(query)
    return TaskPage(items=present(page.rows, show_system), next_cursor=page.next_cursor)


def _find(
    view: TaskListView, ledger: LedgerDep, services: ServicesDep, task_id: UUID, org: str
) -> dict[str, Any]:
    """The task's row; a task the projection has not reached yet is waited for (404 if none)."""
    scope = None if org == "*" else org
    row = view.get(task_id, scope)
    if row is not None:
        return row
    ledger.get_task(task_id, org=org)  # not a task of this org → 404
    position = last_position(ledger.recorder, task_id) or 0
    wait_for_position(services, view, position)
    row = view.get(task_id, scope)
    if row is None:
        raise not_yet_visible(position)
    return row


@router.get("/{task_id}/origin-chain", response_model=OriginChain, responses=LINK_PROBLEMS)
def origin_chain(
    task_id: UUID,
    principal: Reader,
    view: TaskListAt,
    ledger: LedgerDep,
    services: ServicesDep,
    include_system: IncludeSystem = False,
) -> OriginChain:
    """The tasks that led to this one: from the root task down to this task."""
    show_system = wants_system(principal, include_system)
    row = _find(view, ledger, services, task_id, principal.org)
    return OriginChain(chain=present(view.origin_chain(task_id, row["org"]), show_system))


@router.get("/{task_id}/caused", response_model=CausedTasks, responses=LINK_PROBLEMS)
def caused(
    task_id: UUID,
    principal: Reader,
    view: TaskListAt,
    ledger: LedgerDep,
    services: ServicesDep,
    depth: Annotated[
        Literal["1", "all"], Query(description="`1`: direct children; `all`: the whole tree.")
    ] = "1",
    include_system: IncludeSystem = False,
) -> CausedTasks:
    """The tasks this task caused: its direct children, or the whole tree below it."""
    show_system = wants_system(principal, include_system)
    row = _find(view, ledger, services, task_id, principal.org)
    rows = view.caused(task_id, row["org"], all_levels=depth == "all")
    return CausedTasks(items=present(rows, show_system))
