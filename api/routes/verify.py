"""Verification: recompute the hash chains from the stored events and name what differs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import Auditor, ServicesDep
from api.projection_reads import READ_PROBLEMS
from api.schemas import ORG_PATTERN, Problem
from api.services import Services
from api.verify_schemas import VerifyAnswer
from domain.application_errors import TaskNotFoundError
from integrity.checkpoints import checkpoint_check
from integrity.verify import ExtraCheck, verify_store

router = APIRouter(prefix="/v1/verify", tags=["integrity"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such task in the org"}
}


def checks_of(services: Services, org: str, task_id: UUID | None) -> list[ExtraCheck]:
    """The checkpoints' own check, scoped like the verification."""
    if services.checkpoints is None or services.signing_key is None:
        return []
    return [checkpoint_check(services.checkpoints, services.public_keys, org=org, task_id=task_id)]


@router.get("", response_model=VerifyAnswer, responses={**READ_PROBLEMS, **NOT_FOUND})
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
