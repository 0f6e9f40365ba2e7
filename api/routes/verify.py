"""Verification: recompute the hash chains from the stored events and name what differs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import Auditor, ServicesDep
from api.errors import INVALID_QUERY, NO_SUCH_TASK, Responses, declared
from api.schemas import ORG_PATTERN
from api.services import Services
from api.verify_schemas import VerifyAnswer
from domain.application_errors import TaskNotFoundError
from integrity.checkpoints import checkpoint_check
from integrity.verify import ExtraCheck, verify_store

router = APIRouter(prefix="/v1/verify", tags=["integrity"])

VERIFY_PROBLEMS: Responses = {
    403: declared(
        "The token is not an auditor's or admin's, or `org` names an org other than its own"
    ),
    404: NO_SUCH_TASK,
    422: INVALID_QUERY,
}


def checks_of(services: Services, org: str, task_id: UUID | None) -> list[ExtraCheck]:
    """The checkpoints' own check, scoped like the verification."""
    if services.checkpoints is None or services.signing_key is None:
        return []
    return [checkpoint_check(services.checkpoints, services.public_keys, org=org, task_id=task_id)]


@router.get("", response_model=VerifyAnswer, responses=VERIFY_PROBLEMS)
async def verify(
    principal: Auditor,
    services: ServicesDep,
    org: Annotated[
        str | None,
        Query(pattern=ORG_PATTERN, description="The org (platform tokens only, required there)."),
    ] = None,
    task_id: Annotated[UUID | None, Query(description="Only this task's chain.")] = None,
) -> VerifyAnswer:
    """Recompute the org's hash chains (or one task's) from the stored events."""
    scope = principal.org_for(org)
    report = await run_in_threadpool(
        verify_store,
        services.ledger,
        org=scope,
        task_id=task_id,
        extra_checks=checks_of(services, scope, task_id),
    )
    if task_id is not None and report.tasks_checked == 0:
        raise TaskNotFoundError(task_id)
    return VerifyAnswer.model_validate(
        {**asdict(report), "problems": [asdict(p) for p in report.problems]}
    )
