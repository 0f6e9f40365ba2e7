"""API keys: issue, list, revoke (admins; an org admin only within its org)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from api.deps import Admin, LedgerDep, RequestIdDep
from api.errors import IN_FLIGHT, INVALID_QUERY, INVALID_WRITE, Responses, declared
from api.idempotency import IdempotencyDep
from api.presenters import present_new_key
from api.routes.tasks import location
from api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyPublic

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])

NOT_AN_ADMIN = "The token is not an admin's, or `org` names an org other than the token's"
ISSUE_ANSWERS: Responses = {
    201: {
        "description": "The new key, with its token (shown only here)",
        "headers": {"Location": location("The key's URL, `/v1/api-keys/{id}`")},
    },
    403: declared(NOT_AN_ADMIN),
    409: IN_FLIGHT,
    422: INVALID_WRITE,
}
LIST_PROBLEMS: Responses = {403: declared(NOT_AN_ADMIN), 422: INVALID_QUERY}
REVOKE_PROBLEMS: Responses = {
    403: declared("The token is not an admin's"),
    404: declared("No such API key in the token's org"),
    409: declared("The key is already revoked"),
    422: INVALID_QUERY,
}


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=ISSUE_ANSWERS)
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


@router.get("", response_model=ApiKeyList, responses=LIST_PROBLEMS)
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


@router.delete("/{key_id}", status_code=204, responses=REVOKE_PROBLEMS)
def revoke_key(
    key_id: UUID, principal: Admin, ledger: LedgerDep, request_id: RequestIdDep
) -> Response:
    """Revoke a key: its token stops working at once, in every process."""
    with principal.acting(request_id):
        ledger.revoke_key(key_id, org=principal.org)
    return Response(status_code=204)
