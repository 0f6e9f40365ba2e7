"""Steps' logs: append a chunk, read a page, download the whole log, follow it live."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import LedgerDep, Reader, RequestIdDep, ServicesDep, TokenCheckDep, Writer
from api.errors import ProblemError
from api.log_access import LogsDep, logged_step
from api.log_idempotency import LogIdempotencyDep
from api.log_schemas import LogAppended, LogPagePublic
from api.log_stream import Pacing, follow_log
from api.presenters import wants_system
from api.schemas import MAX_VERSION, Problem
from domain.log_application import Appended, StepLogs
from domain.plan import KEY_PATTERN
from projections.stream_positions import stream_positions

router = APIRouter(prefix="/v1/tasks/{task_id}/jobs/{job}/steps/{step}/logs", tags=["logs"])

JobKey = Annotated[str, Path(pattern=KEY_PATTERN.pattern, description="The job's key.")]
StepKey = Annotated[str, Path(pattern=KEY_PATTERN.pattern, description="The step's key.")]
IncludeSystem = Annotated[
    bool, Query(description="Show a system step's log (auditors and admins only).")
]
After = Annotated[int, Query(ge=0, le=MAX_VERSION, description="Only what follows this seq.")]

PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "The token's role does not allow this"},
    404: {"model": Problem, "description": "No such task in the token's org, or no such step"},
    422: {"model": Problem, "description": "Invalid request; `errors` names each field"},
    503: {"model": Problem, "description": "Store unavailable; retry (see Retry-After)"},
}
WRITE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **PROBLEMS,
    400: {"model": Problem, "description": "A bad Idempotency-Key"},
    409: {
        "model": Problem,
        "description": "The step has not started; or a request with the same "
        "Idempotency-Key is still in flight (see Retry-After)",
    },
    413: {"model": Problem, "description": "Body over the size limit (1 MiB by default)"},
    415: {"model": Problem, "description": "Not text/plain; charset=utf-8"},
    422: {"model": Problem, "description": "Empty, not UTF-8, or with NUL characters"},
}
TEXT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/plain; charset=utf-8": {
                "schema": {"type": "string"},
                "example": "Cloning into 'shop'...\ndone.\n",
            }
        },
    }
}
UTF_8 = frozenset({"utf-8", "utf8"})
DOWNLOAD_BLOCK_BYTES = 64 * 1024


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


async def chunk_text(request: Request) -> str:
    """The body as text: UTF-8 (the only charset taken), whole characters only."""
    charset = _charset(request.headers.get("content-type", ""))
    if charset is not None and charset not in UTF_8:
        raise ProblemError(
            415, "Unsupported media type", f"log chunks are UTF-8 text, not {charset}"
        )
    text, problem = _decoded(await request.body())
    if problem is not None:
        message = f"the body is not valid UTF-8 on its own ({problem}); split log text at "
        message += "character boundaries"
        raise ProblemError(
            422, "Invalid request", message, errors=[{"loc": ["body"], "msg": message}]
        )
    return text


def _decoded(body: bytes) -> tuple[str, str | None]:
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return "", f"{error.reason} at byte {error.start}"


ChunkText = Annotated[str, Depends(chunk_text)]


def _position(logs: StepLogs, appended: Appended, answer_id: UUID | None) -> int | None:
    """A keyed append answers its stored record's position: the same on every retry."""
    if answer_id is None:
        return appended.position
    return stream_positions(logs.recorder, answer_id, limit=1).get(1, appended.position)


@router.post(
    "",
    status_code=201,
    response_model=LogAppended,
    responses=WRITE_PROBLEMS,
    openapi_extra=TEXT_BODY,
)
def append_log(
    task_id: UUID,
    job: JobKey,
    step: StepKey,
    text: ChunkText,
    principal: Writer,
    services: ServicesDep,
    idempotency: LogIdempotencyDep,
    request_id: RequestIdDep,
    response: Response,
) -> LogAppended:
    """Append a chunk of text to a step's log (while it runs, or late, once it finished)."""
    target = logged_step(services.ledger, task_id, job, step, principal, include_system=True)
    with principal.acting(request_id):
        appended = services.logs.append(
            target, text, request=idempotency.request(201) if idempotency else None
        )
    if appended.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    position = _position(services.logs, appended, idempotency.answer_id if idempotency else None)
    return LogAppended(
        seq=appended.seq,
        size=appended.size,
        refused_bytes=appended.refused_bytes,
        position=position,
    )


@router.get(
    "",
    response_model=LogPagePublic,
    responses={
        **PROBLEMS,
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "A page of chunks (JSON), or with `format=text` the whole log",
        },
    },
)
def read_log(
    task_id: UUID,
    job: JobKey,
    step: StepKey,
    principal: Reader,
    ledger: LedgerDep,
    logs: LogsDep,
    include_system: IncludeSystem = False,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many chunks.")] = 100,
    format: Annotated[
        Literal["json", "text"],
        Query(description="`text`: the whole log (after `after`) as one text/plain download."),
    ] = "json",
) -> Any:
    """A page of a step's log (chunks in order), or the whole log as text."""
    show_system = wants_system(principal, include_system)
    target = logged_step(ledger, task_id, job, step, principal, include_system=show_system)
    if format == "text":
        totals, chunks = logs.text(task_id, job, step, after=after)
        headers = {
            "X-Log-Chunks": str(totals.chunks),
            "X-Log-Refused-Bytes": str(totals.refused_bytes),
        }
        if after == 0:
            headers["Content-Length"] = str(totals.bytes)
        return StreamingResponse(
            _encoded(chunks), media_type="text/plain; charset=utf-8", headers=headers
        )
    page = logs.page(task_id, job, step, after=after, limit=limit)
    totals = logs.totals(task_id, job, step)
    return LogPagePublic.model_validate(
        {
            "chunks": page.chunks,
            "truncations": page.truncations,
            "next_after": page.next_after,
            "step_status": target.status,
            "log_chunks": totals.chunks,
            "log_bytes": totals.bytes,
            "log_refused_bytes": totals.refused_bytes,
        }
    )


def _encoded(chunks: Iterator[str]) -> Iterator[bytes]:
    """The text as UTF-8, in blocks of about 64 KiB (each block is one hop to a thread)."""
    block: list[bytes] = []
    size = 0
    for chunk in chunks:
        block.append(chunk.encode("utf-8"))
        size += len(block[-1])
        if size >= DOWNLOAD_BLOCK_BYTES:
            yield b"".join(block)
            block, size = [], 0
    if block:
        yield b"".join(block)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        **PROBLEMS,
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
    },
)
async def stream_log(
    task_id: UUID,
    job: JobKey,
    step: StepKey,
    principal: Reader,
    services: ServicesDep,
    token: TokenCheckDep,
    include_system: IncludeSystem = False,
    after: After = 0,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=20,
            description="Resume after this seq (the last `id` seen).",
        ),
    ] = None,
) -> StreamingResponse:
    """A step's log live, as Server-Sent Events (`id` = seq), until the step is terminal."""
    show_system = wants_system(principal, include_system)
    if last_event_id is not None:
        if not last_event_id.strip().isdigit() or int(last_event_id) > MAX_VERSION:
            raise ProblemError(
                422,
                "Invalid request",
                "Last-Event-ID must be a seq (a non-negative integer)",
                errors=[{"loc": ["header", "Last-Event-ID"], "msg": "not a seq"}],
            )
        after = max(after, int(last_event_id))
    target = await run_in_threadpool(
        logged_step, services.ledger, task_id, job, step, principal, include_system=show_system
    )
    settings = services.settings
    messages = follow_log(
        services.logs,
        services.ledger,
        target,
        principal.org,
        after=after,
        pacing=Pacing(
            poll=settings.log_poll_seconds,
            grace=settings.log_follow_grace_seconds,
            heartbeat=settings.sse_heartbeat_seconds,
        ),
        token=token,
    )
    return StreamingResponse(
        messages,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
