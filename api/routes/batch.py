"""Batch ingest: many tasks' transitions in one request, atomic per task, saved together.

For executors that report in bulk. Each item is what `POST /v1/tasks/{id}/transitions`
would do with it (all of its transitions or none; a refused item gets the very
problem document that endpoint answers), items are independent, and the request
is saved with group commit: in one transaction where no item races another writer.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from api.batch_schemas import BatchItemRefused, BatchItemStored, BatchRequest, BatchResult
from api.deps import LedgerDep, RequestIdDep, Writer
from api.errors import HANDLERS, IN_FLIGHT, INVALID_WRITE, Responses
from api.idempotency import IdempotencyDep
from api.routes.tasks import WRITE_FORBIDDEN, json_response
from domain.application import Reported, ReportItem

router = APIRouter(prefix="/v1", tags=["tasks"])

# A refused item (no such task, a refused transition) is an item's outcome in the 200.
BATCH_PROBLEMS: Responses = {403: WRITE_FORBIDDEN, 409: IN_FLIGHT, 422: INVALID_WRITE}


@router.post("/transitions", response_model=BatchResult, responses=BATCH_PROBLEMS)
def report_batch(
    body: BatchRequest,
    principal: Writer,
    ledger: LedgerDep,
    idempotency: IdempotencyDep,
    request_id: RequestIdDep,
    request: Request,
) -> Response:
    """Report progress of several tasks at once (at most 1000 transitions in all).

    Always `200` once the request is valid: each item's own outcome is in `results`
    (`200` with the task's version and position, or `404`/`409`/`422` with a problem).
    """
    items = [
        ReportItem(
            task_id=item.task_id,
            transitions=[t.to_transition() for t in item.transitions],
            expected_version=item.expected_version,
        )
        for item in body.items
    ]
    with principal.acting(request_id):
        outcomes = ledger.report_many(items, org=principal.org)
    results: list[BatchItemStored | BatchItemRefused] = []
    for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
        if isinstance(outcome, Reported):
            results.append(
                BatchItemStored(
                    index=index,
                    task_id=item.task_id,
                    version=outcome.version,
                    position=outcome.position,
                )
            )
        else:
            problem = _problem_for(request, outcome)
            results.append(
                BatchItemRefused(
                    index=index, task_id=item.task_id, status=problem["status"], problem=problem
                )
            )
    positions = [r.position for r in results if isinstance(r, BatchItemStored) and r.position]
    answer = BatchResult(results=results, position=max(positions, default=None))
    if idempotency is not None:
        # Stored after the items, not with them: a batch's answer is only known once
        # they are. A crash in between leaves the items stored and the key unanswered;
        # a retry re-applies them, and repeated transitions are no-ops (or 409s) per item.
        ledger.record_answer(idempotency.request(200), 200, answer.model_dump(mode="json"))
    return json_response(answer)


def _problem_for(request: Request, refusal: Exception) -> dict[str, Any]:
    """The problem document the single-task endpoint answers for this refusal."""
    handler = next(HANDLERS[c] for c in type(refusal).__mro__ if c in HANDLERS)
    response = handler(request, refusal)
    problem: dict[str, Any] = json.loads(bytes(response.body))
    return problem
