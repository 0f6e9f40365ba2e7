"""Tasks: create, report progress, cancel, rerun, and read one task (now or in the past)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, BaseModel

from api.deps import LedgerDep, Reader, RequestIdDep, Writer
from api.errors import (
    IN_FLIGHT,
    INVALID_QUERY,
    INVALID_WRITE,
    NO_SUCH_TASK,
    SYSTEM_FORBIDDEN,
    Responses,
    declared,
    example,
)
from api.idempotency import IdempotencyDep
from api.log_access import LogsDep
from api.log_totals import with_log_totals
from api.presenters import present_task, present_write, wants_system
from api.schemas import (
    MAX_VERSION,
    TASK_EXAMPLE,
    TRANSITION_REFUSED_EXAMPLE,
    CancelRequest,
    RerunRequest,
    TaskCreate,
    TaskPublic,
    TransitionsRequest,
)
from domain.plan import JobPlan, StepPlan

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

# What each route can answer besides its success. The answers every `/v1` operation,
# every body and every POST can give (401, 429, 503; 400, 413, 415; the Idempotency-Key's
# 400 and 409) are declared on each by `api.errors`.
READ_PROBLEMS: Responses = {403: SYSTEM_FORBIDDEN, 404: NO_SUCH_TASK, 422: INVALID_QUERY}
WRITE_FORBIDDEN = declared("The token's role may not write")
IN_FLIGHT_NOTE = "; or a request with the same Idempotency-Key still in flight (see Retry-After)"
CREATE_PROBLEMS: Responses = {
    403: declared("The token's role may not write, or `org` names an org other than its own"),
    409: IN_FLIGHT,
    422: INVALID_WRITE,
}
TRANSITIONS_REFUSED = declared(
    "A transition refused by the task's state (`index`, `target`, `current_status`, "
    "`requested_status` and `reason` say which and why; a timed out or canceled task "
    "refuses every report), or an `expected_version` that is not the task's version"
    + IN_FLIGHT_NOTE,
    {
        "A transition refused": TRANSITION_REFUSED_EXAMPLE,
        "A stale expected_version": {
            "type": "about:blank",
            "title": "Conflict",
            "status": 409,
            "detail": "expected version 1, but the task is at version 8",
            "current_status": "in_progress",
        },
    },
)
CANCEL_REFUSED = declared("The task is immediate or already finished" + IN_FLIGHT_NOTE)
RERUN_REFUSED = declared(
    "The task is immediate, of a type that is not rerunnable, or not failed, timed out or "
    "canceled" + IN_FLIGHT_NOTE
)


def write_problems(refused: dict[str, Any]) -> Responses:
    """A write to one task: its role, the task, the task's state, the request."""
    return {403: WRITE_FORBIDDEN, 404: NO_SUCH_TASK, 409: refused, 422: INVALID_WRITE}


def answers_task(description: str, status: int = 200, *, created: bool = False) -> Responses:
    """The success answer of a route that answers a task, with an example."""
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"example": example(TASK_EXAMPLE)}},
    }
    if created:
        answer["headers"] = {"Location": location("The new task's URL, `/v1/tasks/{id}`")}
    return {status: answer}


def location(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


IncludeSystem = Annotated[
    bool, Query(description="Show system jobs and steps (auditors and admins only).")
]


@router.post(
    "",
    status_code=201,
    response_model=TaskPublic,
    responses={**answers_task("The task, as stored", 201, created=True), **CREATE_PROBLEMS},
)
def create_task(
    body: TaskCreate,
    principal: Writer,
    ledger: LedgerDep,
    idempotency: IdempotencyDep,
    request_id: RequestIdDep,
    response: Response,
) -> TaskPublic:
    """Record a new task (immediate, or executable with its jobs and steps)."""
    org = principal.org_for(body.org, where="body")
    jobs = [
        JobPlan(
            key=j.key,
            name=j.name,
            needs=tuple(j.needs),
            system=j.system,
            steps=tuple(StepPlan(s.key, s.name, s.system) for s in j.steps),
        )
        for j in body.jobs
    ]
    with principal.acting(request_id):
        written = ledger.create_task(
            org=org,
            type=body.type,
            title=body.title,
            kind=body.kind,
            author=body.author.model_dump(),
            project=body.project,
            origin_task_id=body.origin_task_id,
            silent=body.silent,
            rerunnable=body.rerunnable,
            timeout_seconds=body.timeout_seconds,
            labels=body.labels,
            jobs=jobs,
            request=idempotency.request(201) if idempotency else None,
        )
    response.headers["Location"] = f"/v1/tasks/{written.task['id']}"
    return present_write(ledger, written, idempotency.answer_id if idempotency else None)


@router.post(
    "/{task_id}/transitions",
    response_model=TaskPublic,
    responses={
        **answers_task("The task after the transitions"),
        **write_problems(TRANSITIONS_REFUSED),
    },
)
def report_transitions(
    task_id: UUID,
    body: TransitionsRequest,
    principal: Writer,
    ledger: LedgerDep,
    idempotency: IdempotencyDep,
    request_id: RequestIdDep,
) -> Response:
    """Report progress: a list of transitions applied atomically (all or nothing)."""
    transitions = [t.to_transition() for t in body.transitions]
    with principal.acting(request_id):
        written = ledger.report(
            task_id,
            transitions,
            expected_version=body.expected_version,
            org=principal.org,
            request=idempotency.request(200) if idempotency else None,
        )
    return json_response(
        present_write(ledger, written, idempotency.answer_id if idempotency else None)
    )


def json_response(document: BaseModel, status_code: int = 200) -> Response:
    """The document, serialised once: the ingest path's answer skips FastAPI's second
    validation of an answer that is already a validated model (and its thread hop)."""
    return Response(document.model_dump_json(), status_code, media_type="application/json")


@router.post(
    "/{task_id}/cancel",
    response_model=TaskPublic,
    responses={
        **answers_task("The task, `canceled` or `canceling`"),
        **write_problems(CANCEL_REFUSED),
    },
)
def cancel_task(
    task_id: UUID,
    principal: Writer,
    ledger: LedgerDep,
    idempotency: IdempotencyDep,
    request_id: RequestIdDep,
    body: CancelRequest | None = None,
) -> TaskPublic:
    """Cancel a task: at once when nothing runs, else it goes `canceling`."""
    with principal.acting(request_id):
        written = ledger.cancel(
            task_id,
            body.reason if body else None,
            org=principal.org,
            request=idempotency.request(200) if idempotency else None,
        )
    return present_write(ledger, written, idempotency.answer_id if idempotency else None)


@router.post(
    "/{task_id}/rerun",
    status_code=201,
    response_model=TaskPublic,
    responses={
        **answers_task("The new task (`rerun_of` names this one)", 201, created=True),
        **write_problems(RERUN_REFUSED),
    },
)
def rerun_task(
    task_id: UUID,
    body: RerunRequest,
    principal: Writer,
    ledger: LedgerDep,
    idempotency: IdempotencyDep,
    request_id: RequestIdDep,
    response: Response,
) -> TaskPublic:
    """Rerun a failed, timed out or canceled task as a new task (optionally forced)."""
    with principal.acting(request_id):
        written = ledger.rerun(
            task_id,
            author=body.author.model_dump(),
            force=body.force,
            org=principal.org,
            request=idempotency.request(201) if idempotency else None,
        )
    response.headers["Location"] = f"/v1/tasks/{written.task['id']}"
    return present_write(ledger, written, idempotency.answer_id if idempotency else None)


@router.get(
    "/{task_id}",
    response_model=TaskPublic,
    responses={**answers_task("The task, now or as it was"), **READ_PROBLEMS},
)
def get_task(
    task_id: UUID,
    principal: Reader,
    ledger: LedgerDep,
    logs: LogsDep,
    include_system: IncludeSystem = False,
    as_of: Annotated[
        AwareDatetime | None,
        Query(description="The task as it was at this moment (RFC 3339, with a timezone)."),
    ] = None,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="The task as of this version.")
    ] = None,
) -> TaskPublic:
    """One task with its jobs and steps: now (strongly consistent), or as of a past moment."""
    show_system = wants_system(principal, include_system)
    view = ledger.get_task(task_id, org=principal.org, version=version, as_of=as_of)
    if as_of is None and version is None:
        # Totals are the logs' now: a past view of the task leaves them null.
        view = with_log_totals(view, logs)
    return present_task(ledger, view, include_system=show_system)
