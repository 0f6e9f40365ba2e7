"""Turn plain views from the application into response schemas for one principal."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from api.deps import Principal
from api.schemas import ApiKeyCreated, TaskPublic
from api.visibility import visible_task
from domain.api_key import ApiKey
from domain.application import TaskLedger, Written
from domain.application_errors import AnswerUnavailableError, StoreUnavailableError
from domain.idempotency import IdempotentAnswer
from domain.store_errors import STORE_ERRORS
from domain.views import key_view, task_view
from projections.stream_positions import stream_positions

# What reading a stored answer back may raise once the write is committed.
READ_BACK_ERRORS: tuple[type[Exception], ...] = (StoreUnavailableError, *STORE_ERRORS)


def position_of(ledger: TaskLedger, task_id: UUID, version: int) -> int | None:
    positions = stream_positions(ledger.recorder, task_id, after_version=version - 1, limit=1)
    return positions.get(version)


def present_task(
    ledger: TaskLedger,
    view: dict[str, Any],
    *,
    position: int | None = None,
    include_system: bool = False,
) -> TaskPublic:
    """The task as this reader may see it, with its position (looked up when not known)."""
    if position is None:
        position = position_of(ledger, view["id"], view["version"])
    return TaskPublic.model_validate({**visible_task(view, include_system), "position": position})


def marked_redacted(shown: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The shown entry, saying whether system work was cut from its data.

    A redacted entry's hash still covers the whole event, so its reader cannot
    recompute it: the mark tells them so, instead of letting it look tampered.
    """
    return {**shown, "redacted": shown["data"] != entry["data"]}


def wants_system(principal: Principal, include_system: bool) -> bool:
    if include_system:
        principal.require("see_system")
    return include_system


def present_new_key(view: dict[str, Any], token: str | None, position: int | None) -> ApiKeyCreated:
    return ApiKeyCreated.model_validate({**view, "token": token, "position": position})


def present_answer(ledger: TaskLedger, answer: IdempotentAnswer) -> TaskPublic | ApiKeyCreated:
    """What a keyed write answered, rebuilt from its stored record, exactly, every time.

    The write stored the record last, so its position is the write's position; the
    subject is read at the version the write left it, with durations as of the
    moment it was answered. A key's token is never stored: it cannot be shown again.
    """
    assert answer.subject_id is not None and answer.subject_version is not None
    subject: Any = ledger.repository.get(answer.subject_id, version=answer.subject_version)
    position = position_of(ledger, answer.id, 1)
    if isinstance(subject, ApiKey):
        return present_new_key(key_view(subject), None, position)
    return present_task(ledger, task_view(subject, answer.answered_at), position=position)


def present_write(ledger: TaskLedger, written: Written, answer_id: UUID | None) -> TaskPublic:
    """A write's answer; for a keyed write, the very answer its retries will get."""
    if answer_id is not None and written.position is not None:
        try:
            answer = ledger.find_answer(answer_id)
            if answer is not None and answer.body is None:
                document = present_answer(ledger, answer)
                assert isinstance(document, TaskPublic)
                return document
        except READ_BACK_ERRORS as error:
            raise AnswerUnavailableError(str(error)) from error
    return present_task(ledger, written.task, position=written.position)
