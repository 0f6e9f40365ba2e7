"""Request and response shapes of batch ingest, `POST /v1/transitions`."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field, field_validator

from api.schemas import MAX_VERSION, Request, Response, TransitionItem

# Transitions in one request, over all of its items: as many as one task's report.
MAX_BATCH_TRANSITIONS = 1000


class BatchItem(Request):
    task_id: UUID
    transitions: Annotated[
        list[TransitionItem], Field(min_length=1, max_length=MAX_BATCH_TRANSITIONS)
    ]
    expected_version: Annotated[int, Field(ge=0, le=MAX_VERSION)] | None = None


class BatchRequest(Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "task_id": "0b5a7c8e-3f0e-4c1b-9a39-1d2f5b6c7d8e",
                            "transitions": [
                                {"job": "build", "step": "clone", "status": "in_progress"},
                                {"job": "build", "step": "clone", "status": "done"},
                            ],
                        },
                        {
                            "task_id": "6f1e2d3c-4b5a-4987-8a6b-5c4d3e2f1a0b",
                            "transitions": [{"status": "queued"}],
                            "expected_version": 1,
                        },
                    ]
                }
            ]
        },
    )

    items: Annotated[list[BatchItem], Field(min_length=1, max_length=MAX_BATCH_TRANSITIONS)]

    @field_validator("items")
    @classmethod
    def _at_most_max_transitions(cls, items: list[BatchItem]) -> list[BatchItem]:
        total = sum(len(item.transitions) for item in items)
        if total > MAX_BATCH_TRANSITIONS:
            raise ValueError(
                f"at most {MAX_BATCH_TRANSITIONS} transitions in all per request, got {total}"
            )
        return items


class BatchItemStored(Response):
    """An item whose transitions were all applied (or changed nothing)."""

    index: int
    task_id: UUID
    status: Literal[200] = 200
    version: int
    # The position of the item's last event; null when it stored nothing.
    position: int | None


class BatchItemRefused(Response):
    """An item that stored nothing: the problem the single-task endpoint would answer."""

    index: int
    task_id: UUID
    status: Literal[404, 409, 422]
    problem: dict[str, Any]


class BatchResult(Response):
    results: list[BatchItemStored | BatchItemRefused]
    # The largest position stored by this request (for `min_position` reads); null if none.
    position: int | None
