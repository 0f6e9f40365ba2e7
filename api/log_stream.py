"""A step's log, live, as Server-Sent Events: replay what exists, follow, then end.

Each chunk is one message whose `id` is its seq and whose data is the chunk as JSON
(`{"seq", "text", "recorded_at"}`: JSON keeps every character, where SSE data lines
would fold `\\r`). A mark of text refused over the cap is an `event: truncated`
message. A client that reconnects with `Last-Event-ID` (or `?after=`) gets exactly
the chunks after that seq: seqs are the log stream's versions, dense and immutable.

The log store is polled (every `log_poll_seconds`); the step's status is read from
the ledger before each read of the log. When the step is terminal and a read that
followed has found nothing new for `log_follow_grace_seconds` (late chunks still
arrive after a step finished), the stream sends `event: end` and closes. A job
that backs off puts the step back to pending: the stream keeps following the retry.
Comment lines keep an idle connection open through proxies. The stream asks again
whether its token works at every heartbeat (at least every few seconds) and ends,
without `event: end`, once it is revoked: a reconnect then gets `401`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from api.deps import REVOKED_MESSAGE, TokenCheck
from api.log_access import step_status
from domain.application import TaskLedger
from domain.log_application import LogChunk, LogPage, StepLogs, Truncation
from domain.logs import LoggedStep
from domain.status import Status

STREAM_PAGE = 200
# The step's status is read at most this often (it only decides when the stream ends).
STATUS_EVERY_SECONDS = 0.25


@dataclass(frozen=True)
class Pacing:
    poll: float
    grace: float
    heartbeat: float


def _message(entry: LogChunk | Truncation) -> str:
    if isinstance(entry, LogChunk):
        data = {"seq": entry.seq, "text": entry.text, "recorded_at": _time(entry)}
        return f"id: {entry.seq}\ndata: {_json(data)}\n\n"
    data = {
        "seq": entry.seq,
        "refused_bytes": entry.refused_bytes,
        "cap_bytes": entry.cap_bytes,
        "recorded_at": _time(entry),
    }
    return f"id: {entry.seq}\nevent: truncated\ndata: {_json(data)}\n\n"


def _time(entry: LogChunk | Truncation) -> str:
    return entry.recorded_at.isoformat().replace("+00:00", "Z")


def _json(data: object) -> str:
    # ensure_ascii keeps U+2028/U+2029 and every control character escaped on one line.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def _in_order(page: LogPage) -> list[LogChunk | Truncation]:
    return sorted([*page.chunks, *page.truncations], key=lambda entry: entry.seq)


async def follow_log(
    logs: StepLogs,
    ledger: TaskLedger,
    target: LoggedStep,
    org: str,
    *,
    after: int,
    pacing: Pacing,
    token: TokenCheck,
) -> AsyncIterator[str]:
    """SSE messages: the log after seq `after`, then each chunk as it lands, until the end
    (or until the token is revoked)."""
    yield "retry: 2000\n\n"
    status = target.status
    status_read_at = time.monotonic()
    quiet_since: float | None = None
    last_sent = time.monotonic()
    while True:
        if await token.revoked():
            yield REVOKED_MESSAGE
            return
        if time.monotonic() - status_read_at >= STATUS_EVERY_SECONDS:
            status_read_at = time.monotonic()
            status = await run_in_threadpool(step_status, ledger, target, org)
        # Read after the status: a terminal status then an empty read means drained.
        page = await run_in_threadpool(
            logs.page, target.task_id, target.job, target.step, after=after, limit=STREAM_PAGE
        )
        for entry in _in_order(page):
            yield _message(entry)
            last_sent = time.monotonic()
        if page.next_after != after:
            after, quiet_since = page.next_after, None
            if page.more:
                continue  # replaying a long log: no pause between pages
        if Status(status).is_terminal:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= pacing.grace:
                yield f"event: end\ndata: {_json({'step_status': status, 'last_seq': after})}\n\n"
                return
        if time.monotonic() - last_sent >= pacing.heartbeat:
            yield ": heartbeat\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(pacing.poll)
