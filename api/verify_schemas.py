"""Response shape of `GET /v1/verify`: what verification found."""

from __future__ import annotations

from pydantic import Field

from api.schemas import Response


class VerifyProblem(Response):
    task_id: str | None = Field(description="The task whose chain is broken (null: a checkpoint).")
    version: int | None = Field(description="The event's version (for `removed`: the missing one).")
    reason: str = Field(
        description="What does not match, first word: `edited`, `removed`, `reordered`, "
        "`undecodable`, `unhashed` (or a checkpoint's problem), then why.",
        examples=["edited: its content does not give its stored hash"],
    )
    checkpoint: int | None = Field(
        default=None, description="The checkpoint's seq, for a problem of a checkpoint."
    )


class VerifyAnswer(Response):
    ok: bool = Field(description="True when nothing was found.")
    tasks_checked: int
    events_checked: int
    problems: list[VerifyProblem]
