"""Tasks: create, report progress, cancel, rerun, and read one task (now or in the past)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, BaseModel

from api.deps import LedgerDep, Reader, RequestIdDep, Writer
from api.idempotency import IdempotencyDep
from api.log_access import LogsDep
from api.log_totals import with_log_totals
from api.presenters import present_task, present_write, wants_system
from api.schemas import (
    MAX_VERSION,
    CancelRequest,
    Problem,
    RerunRequest,
    TaskCreate,
    TaskPublic,
    TransitionsRequest,
)
from domain.plan import JobPlan, StepPlan

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "The token's role does not allow this"},
    404: {"model": Problem, "description": "No such task in the token's org"},
    422: {"model": Problem, "description": "Invalid request; `errors` names each field"},
}
WRITE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **PROBLEMS,
    400: {"model": Problem, "description": "Malformed JSON or a bad Idempotency-Key"},
    409: {"model": Problem, "description": "Refused by the task's current state"},
    413: {"model": Problem, "description": "Body over the size limit"},
    415: {"model": Problem, "description": "Not application/json"},
    503: {"model": Problem, "description": "Store unavailable; retry (see Retry-After)"},
}

IncludeSystem = Annotated[
    bool, Query(description="Show system jobs and steps (auditors and admins only).")
]


@router.post("", status_code=201, response_model=TaskPublic, responses=WRITE_PROBLEMS)
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


@router.post("/{task_id}/transitions", response_model=TaskPublic, responses=WRITE_PROBLEMS)
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


@router.post("/{task_id}/cancel", response_model=TaskPublic, responses=WRITE_PROBLEMS)
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
    "/{task_id}/rerun", status_code=201, response_model=TaskPublic, responses=WRITE_PROBLEMS
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


@router.get("/{task_id}", response_model=TaskPublic, responses=PROBLEMS)
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
