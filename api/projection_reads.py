"""What every projection-backed read shares: the read models, and `min_position`.

Lists and feeds read projections, which follow the store asynchronously. A client
that must see its own write passes that write's `position` as `min_position`; the
read waits (up to `min_position_timeout_seconds`, 5 s by default) until the
projection has processed it, else answers 503 with `Retry-After`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Query

from api.deps import ServicesDep
from api.errors import ProblemError
from api.schemas import Problem
from projections.event_feed import OrgEventView
from projections.runtime import Projections
from projections.task_list import TaskListView

MinPosition = Annotated[
    int | None,
    Query(
        ge=0,
        description="Wait (up to 5 s) until this list reflects the store up to this position "
        "(the `position` of your last write); else 503 with Retry-After.",
    ),
]

IncludeSystem = Annotated[
    bool, Query(description="Show system jobs and steps (auditors and admins only).")
]

READ_PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "The token's role (or org) does not allow this"},
    422: {"model": Problem, "description": "Invalid query; `errors` names each parameter"},
    503: {"model": Problem, "description": "`min_position` not reached in time; retry"},
}


def get_projections(services: ServicesDep) -> Projections:
    if services.projections is None:
        raise ProblemError(503, "Unavailable", "this process serves no read models")
    return services.projections


ProjectionsDep = Annotated[Projections, Depends(get_projections)]


def not_yet_visible(position: int) -> ProblemError:
    return ProblemError(
        503,
        "Not yet visible",
        f"the read model has not reached position {position} yet; retry shortly",
        headers={"Retry-After": "1"},
    )


def wait_for_position(services: ServicesDep, view: Any, position: int | None) -> None:
    """Returns once `view` processed `position` (None: at once); 503 after the timeout."""
    if position is None:
        return
    if not view.progress.wait_for(position, services.settings.min_position_timeout_seconds):
        raise not_yet_visible(position)


def _view_at(name: str) -> Callable[..., Any]:
    def dependency(
        services: ServicesDep, projections: ProjectionsDep, min_position: MinPosition = None
    ) -> Any:
        view = projections.projections[name].view
        wait_for_position(services, view, min_position)
        return view

    return dependency


# A read model, once it has reached the request's `min_position`.
TaskListAt = Annotated[TaskListView, Depends(_view_at("task_list"))]
EventFeedAt = Annotated[OrgEventView, Depends(_view_at("event_feed"))]
