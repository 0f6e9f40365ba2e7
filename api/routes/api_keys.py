"""API keys: issue, list, revoke (admins; an org admin only within its org)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from api.deps import Admin, LedgerDep, RequestIdDep
from api.idempotency import IdempotencyDep
from api.presenters import present_new_key
from api.routes.tasks import WRITE_PROBLEMS
from api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyPublic

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=WRITE_PROBLEMS)
def issue_key(
    body: ApiKeyCreate,
    principal: Admin,
    ledger: LedgerDep,
    idempotency: IdempotencyDep,
    request_id: RequestIdDep,
    response: Response,
) -> ApiKeyCreated:
    """Issue a key; its token is in this answer only (only a hash is stored)."""
    org = principal.org_for(body.org, where="body")
    with principal.acting(request_id):
        view, token, position = ledger.issue_key(
            org=org,
            role=body.role,
            name=body.name,
            request=idempotency.request(201) if idempotency else None,
        )
    response.headers["Location"] = f"/v1/api-keys/{view['id']}"
    return present_new_key(view, token, position)


@router.get("", response_model=ApiKeyList, responses=WRITE_PROBLEMS)
def list_keys(
    principal: Admin,
    ledger: LedgerDep,
    org: Annotated[str | None, Query(max_length=63)] = None,
) -> ApiKeyList:
    """The keys of an org (or every key, for a platform admin without `org`)."""
    if not principal.is_platform:
        org = principal.org_for(org)
    items = ledger.list_keys(org=org)
    return ApiKeyList(items=[ApiKeyPublic.model_validate(k) for k in items])


@router.delete("/{key_id}", status_code=204, responses=WRITE_PROBLEMS)
def revoke_key(
    key_id: UUID, principal: Admin, ledger: LedgerDep, request_id: RequestIdDep
) -> Response:
    """Revoke a key: its token stops working at once, in every process."""
    with principal.acting(request_id):
        ledger.revoke_key(key_id, org=principal.org)
    return Response(status_code=204)
