"""Response shapes of the log routes (the request body is plain text, not a schema).

Kept apart from `api/schemas.py`, one family per resource: a chunk's event, its API
shape and its row never share a class.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.schemas import Response
from domain.status import Status


class LogAppended(Response):
    seq: int = Field(description="The log's seq after this append: its last event's.")
    size: int = Field(description="Bytes of text this append stored (UTF-8).")
    refused_bytes: int = Field(
        default=0,
        description="Bytes this append brought past the step's cap: not stored, and "
        "recorded as refused (a `truncated` mark in the log).",
    )
    position: int | None = Field(
        description="Global position of the last event stored, in the log store's own order "
        "(log positions are not task positions: not for `min_position`)."
    )


class LogChunkPublic(Response):
    seq: int
    text: str
    recorded_at: datetime


class LogTruncationPublic(Response):
    seq: int
    refused_bytes: int = Field(description="Bytes refused by the append this mark records.")
    cap_bytes: int = Field(description="The per-step cap in force then.")
    recorded_at: datetime


class LogPagePublic(Response):
    chunks: list[LogChunkPublic]
    truncations: list[LogTruncationPublic] = Field(
        description="Marks, in this page's range, where text over the step's cap was refused."
    )
    next_after: int = Field(description="Pass as `after` for what follows (the last seq read).")
    step_status: Status
    log_chunks: int = Field(description="Chunks in the whole log now.")
    log_bytes: int = Field(description="Bytes of text in the whole log now.")
    log_refused_bytes: int = Field(description="Bytes refused over the cap, in all.")
