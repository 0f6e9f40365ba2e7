"""A task's execution graph: JSON, an SVG picture, or Mermaid text."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

from api.deps import LedgerDep, Reader
from api.graph import graph_json, graph_mermaid, graph_svg
from api.presenters import wants_system
from api.routes.tasks import READ_PROBLEMS, IncludeSystem
from api.schemas import Graph

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get(
    "/{task_id}/graph",
    response_model=Graph,
    responses={
        **READ_PROBLEMS,
        200: {
            "description": "The graph as JSON, SVG (`format=svg`) or Mermaid (`format=mermaid`)",
            "content": {"image/svg+xml": {}, "text/plain": {}},
        },
    },
)
def get_graph(
    task_id: UUID,
    principal: Reader,
    ledger: LedgerDep,
    include_system: IncludeSystem = False,
    format: Annotated[Literal["json", "svg", "mermaid"], Query()] = "json",
) -> Response | Graph:
    """The jobs and their needs: nodes coloured by status, edges from need to dependant."""
    show_system = wants_system(principal, include_system)
    task = ledger.get_task(task_id, org=principal.org)
    if format == "svg":
        return Response(graph_svg(task, show_system), media_type="image/svg+xml")
    if format == "mermaid":
        return PlainTextResponse(graph_mermaid(task, show_system))
    return Graph.model_validate(graph_json(task, show_system))
