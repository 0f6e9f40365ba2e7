"""Signed checkpoints and the keys that verify them (any role may read them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.checkpoint_schemas import CheckpointPublic, SigningKeyList
from api.deps import PrincipalDep, Reader, ServicesDep
from api.errors import ProblemError
from api.projection_reads import READ_PROBLEMS
from api.schemas import ORG_PATTERN, Problem

router = APIRouter(tags=["integrity"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "The org has no checkpoint yet"}
}


@router.get("/v1/signing-keys", response_model=SigningKeyList, responses=READ_PROBLEMS)
def signing_keys(principal: PrincipalDep, services: ServicesDep) -> SigningKeyList:
    """The public keys checkpoints verify with (Ed25519, raw, base64), the current one first."""
    return SigningKeyList.model_validate({"keys": [k.as_json() for k in services.public_keys]})


@router.get(
    "/v1/checkpoints/latest",
    response_model=CheckpointPublic,
    responses={**READ_PROBLEMS, **NOT_FOUND},
)
async def latest_checkpoint(
    principal: Reader,
    services: ServicesDep,
    org: Annotated[
        str | None,
        Query(pattern=ORG_PATTERN, description="The org (platform tokens only, required there)."),
    ] = None,
) -> CheckpointPublic:
    """The org's latest signed checkpoint."""
    scope = principal.org_for(org)
    assert services.checkpoints is not None
    latest = await run_in_threadpool(services.checkpoints.latest, scope)
    if latest is None:
        raise ProblemError(404, "Not found", f"org {scope} has no checkpoint yet")
    return CheckpointPublic.model_validate(latest.document)
