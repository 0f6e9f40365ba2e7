"""Signed checkpoints and the keys that verify them (any role may read them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.checkpoint_schemas import CheckpointPublic, SigningKeyList
from api.deps import PrincipalDep, Reader, ServicesDep
from api.errors import INVALID_QUERY, ProblemError, Responses, declared
from api.schemas import ORG_PATTERN

router = APIRouter(tags=["integrity"])

# Any token may read the signing keys: nothing but the answers of every `/v1` operation.
LATEST_PROBLEMS: Responses = {
    403: declared("`org` names an org other than the token's"),
    404: declared("The org has no checkpoint yet"),
    422: INVALID_QUERY,
}


@router.get("/v1/signing-keys", response_model=SigningKeyList)
def signing_keys(principal: PrincipalDep, services: ServicesDep) -> SigningKeyList:
    """The public keys checkpoints verify with (Ed25519, raw, base64), the current one first."""
    return SigningKeyList.model_validate({"keys": [k.as_json() for k in services.public_keys]})


@router.get(
    "/v1/checkpoints/latest",
    response_model=CheckpointPublic,
    responses=LATEST_PROBLEMS,
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
