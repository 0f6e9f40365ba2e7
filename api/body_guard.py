"""Hostile bodies never reach a route: size, content type and strict JSON checks.

A pure ASGI middleware, so an oversized body is refused while it streams in
(with or without Content-Length), before anything reads it whole. JSON bodies are
parsed strictly here (invalid UTF-8, duplicate keys, NaN/Infinity, integers of absurd
length, absurd nesting, NUL characters and lone surrogates are refused) and then
handed on unchanged.
A query with a NUL character in a value is refused for every method (PostgreSQL
text cannot hold one, and no filter value needs one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PROBLEM_MEDIA_TYPE

MAX_DEPTH = 32
# No field takes an integer anywhere near this long (versions have 19 digits). It is
# CPython's own default limit, stated here so that the answer (400, naming the problem)
# does not depend on how the interpreter was configured: with its limit off, turning
# a megabyte of digits into an int would take seconds.
MAX_INT_DIGITS = 4300
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyRefused(Exception):
    def __init__(self, status: int, title: str, detail: str, errors: list[Any] | None = None):
        self.status, self.title, self.detail, self.errors = status, title, detail, errors
        super().__init__(detail)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BodyRefused(400, "Malformed JSON", f"duplicate key {key!r} in an object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise BodyRefused(400, "Malformed JSON", f"{name} is not a JSON number")


def _bounded_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise BodyRefused(
            400,
            "Malformed JSON",
            f"an integer of {digits} digits; integers have at most {MAX_INT_DIGITS} digits",
        )
    return int(literal)


Loc = tuple[str | int, ...]


def _walk(value: Any, loc: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """Every value with its location, iteratively (no recursion on hostile depth)."""
    stack = [(loc, value)]
    while stack:
        here, item = stack.pop()
        if len(here) > MAX_DEPTH:
            raise BodyRefused(400, "Malformed JSON", f"nesting deeper than {MAX_DEPTH} levels")
        yield here, item
        if isinstance(item, dict):
            for key, child in item.items():
                yield (*here, key), key
                stack.append(((*here, key), child))
        elif isinstance(item, list):
            stack.extend(((*here, i), child) for i, child in enumerate(item))


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "NUL characters are not allowed"
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        return "lone surrogates are not allowed (not valid Unicode text)"
    return None


def check_json(body: bytes) -> None:
    """Raises BodyRefused unless `body` is strict, well-formed, reasonable JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyRefused(400, "Malformed JSON", f"body is not valid UTF-8: {error}") from None
    try:
        document = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_int=_bounded_int,
        )
    except RecursionError:
        raise BodyRefused(400, "Malformed JSON", "nesting is too deep") from None
    except json.JSONDecodeError as error:
        raise BodyRefused(400, "Malformed JSON", f"invalid JSON: {error}") from None
    except ValueError:
        # What else the parser raises is a value it cannot hold (an integer over a
        # limit the interpreter was set to below ours): the client's mistake, never a 500.
        raise BodyRefused(400, "Malformed JSON", "a number too large to read") from None
    errors = []
    for loc, value in _walk(document, ("body",)):
        if isinstance(value, str) and (reason := _bad_text(value)):
            errors.append({"loc": list(loc), "msg": reason})
    if errors:
        raise BodyRefused(422, "Invalid request", "text fields must be valid Unicode", errors)


def check_query(query_string: bytes) -> None:
    """Raises BodyRefused when a query parameter's value holds a NUL character."""
    if b"%00" not in query_string:
        return
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, errors="replace")
    errors = [
        {"loc": ["query", name], "msg": "NUL characters are not allowed"}
        for name, value in pairs
        if "\x00" in value or "\x00" in name
    ]
    if errors:
        raise BodyRefused(422, "Invalid request", "query values must be text without NUL", errors)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class BodyGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int, text_paths_suffix: str = "/logs"):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.text_paths_suffix = text_paths_suffix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_query(scope.get("query_string", b""))
        except BodyRefused as refusal:
            await self._refuse(send, refusal)
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await self._read(headers, receive)
            self._check(scope, headers, body)
        except BodyRefused as refusal:
            await self._refuse(send, refusal)
            return

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _too_large(self) -> BodyRefused:
        limit = self.max_body_bytes
        return BodyRefused(413, "Body too large", f"bodies are limited to {limit} bytes")

    def _check(self, scope: Scope, headers: dict[str, str], body: bytes) -> None:
        content_type = headers.get("content-type", "")
        if scope["path"].endswith(self.text_paths_suffix):
            media = content_type.split(";", 1)[0].strip().lower()
            if media != "text/plain":
                raise BodyRefused(
                    415, "Unsupported media type", "log chunks are text/plain; charset=utf-8"
                )
            return
        if not body:
            return
        if not _is_json(content_type):
            got = content_type or "none"
            raise BodyRefused(415, "Unsupported media type", f"expected JSON, got {got}")
        check_json(body)

    @staticmethod
    async def _refuse(send: Send, refusal: BodyRefused) -> None:
        document: dict[str, Any] = {
            "type": "about:blank",
            "title": refusal.title,
            "status": refusal.status,
            "detail": refusal.detail,
        }
        if refusal.errors:
            document["errors"] = refusal.errors
        payload = json.dumps(document).encode()
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
