"""Structured logs: one JSON object per line, and a request id for every request.

`configure_logging(level)` (called by the app factory) gives the `tasktrail` loggers
a handler writing JSON lines to stderr: `time`, `level`, `logger`, `message`, `pid`, plus
`request_id` (of the request being served, if any), whatever a record carries
among `method`, `route`, `status`, `duration_ms`, and `exception` (its traceback).

`server_log_config(level)` is the whole logging configuration of a server process
(`serve`, each of its web processes, `worker`): the same JSON lines for every logger,
uvicorn's own included (startup, shutdown, "Exception in ASGI application"), and for
other libraries' warnings. uvicorn applies it in every process it starts.

`RequestContext` (pure ASGI middleware) takes the request id from `X-Request-ID`
(or makes one), puts it in `request.state.request_id` (the routes record it in each
event's metadata), echoes it as `X-Request-ID`, and logs one line per request on
`tasktrail.access`. It logs the route template, never the raw path or the query, and
never a header: tokens cannot reach the logs.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: ContextVar[str | None] = ContextVar("tasktrail_request_id", default=None)
access_logger = logging.getLogger("tasktrail.access")

EXTRA_FIELDS = ("method", "route", "status", "duration_ms")
MAX_REQUEST_ID = 200


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            # Which process: `serve --workers N` writes the lines of N + 1 into one stream.
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """JSON lines to whatever `sys.stderr` is now (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure_logging(level: str = "info") -> None:
    """Gives the `tasktrail` loggers one JSON-lines handler (once per process), unless the
    server's configuration (`server_log_config`) gave the root logger one they reach."""
    logger = logging.getLogger("tasktrail")
    logger.setLevel(level.upper())
    reached = [*logger.handlers, *logging.getLogger().handlers]
    if not any(isinstance(handler, JsonLinesHandler) for handler in reached):
        logger.addHandler(JsonLinesHandler())


def server_log_config(level: str) -> dict[str, Any]:
    """The `logging.config.dictConfig` of a server process: every line it logs is JSON.

    One handler, on the root logger: our loggers and uvicorn's log at `level` and reach
    it; other libraries only from WARNING up, however verbose `level` is. Naming
    `tasktrail` here also drops a handler `configure_logging` may have given it before,
    so no line is written twice.
    """
    level = level.upper()
    libraries = max(logging.WARNING, logging.getLevelNamesMapping()[level])
    return {
        "version": 1,
        # Loggers created at import (ours, uvicorn's, the library's) keep working.
        "disable_existing_loggers": False,
        "handlers": {"json": {"()": JsonLinesHandler}},
        "loggers": {"tasktrail": {"level": level}, "uvicorn": {"level": level}},
        "root": {"level": logging.getLevelName(libraries), "handlers": ["json"]},
    }


def configure_server_logging(level: str) -> None:
    """Applies `server_log_config` to this process (uvicorn applies it to its own)."""
    logging.config.dictConfig(server_log_config(level))
    configure_logging(level)


def _valid_request_id(value: bytes) -> str | None:
    """A caller's request id, if it is printable ASCII that can be echoed as a header."""
    text = value.decode("latin-1")[:MAX_REQUEST_ID].strip()
    if text and all(32 < ord(c) < 127 for c in text):
        return text
    return None


def route_template(scope: Scope) -> str:
    """The matched route's template (`/v1/tasks/{task_id}`), never the raw path."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else "unmatched"


class RequestContext:
    """Request id in, request id out, one access log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), None)
        request_id = (_valid_request_id(supplied) if supplied else None) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            access_logger.info(
                "%s %s %s",
                scope["method"],
                route_template(scope),
                status,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": route_template(scope),
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )
            request_id_var.reset(token)
