"""Who is acting, and as part of which command: set once per request, read by every event.

The API sets these for each request; every event stamps them (see
`domain.stamped.StampedEvent`), so an event always records its actor without every
command passing it along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import uuid4

SYSTEM_ACTOR: dict[str, Any] = {"id": "tasktrail", "name": "tasktrail", "kind": "system"}

actor_cvar: ContextVar[dict[str, Any]] = ContextVar("actor", default=SYSTEM_ACTOR)
command_id_cvar: ContextVar[str | None] = ContextVar("command_id", default=None)
request_id_cvar: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_actor() -> dict[str, Any]:
    return dict(actor_cvar.get())


def current_command_id() -> str:
    # Outside a command (a unit test driving the aggregate directly) every event
    # gets an id of its own.
    return command_id_cvar.get() or uuid4().hex


def current_request_id() -> str | None:
    return request_id_cvar.get()


@contextmanager
def acting_as(actor: dict[str, Any]) -> Iterator[None]:
    """Runs the enclosed commands on behalf of `actor`."""
    token = actor_cvar.set(dict(actor))
    try:
        yield
    finally:
        actor_cvar.reset(token)


@contextmanager
def command_scope(command_id: str | None = None) -> Iterator[str]:
    """Gives every event triggered inside one command attempt the same command id.

    The id lets the application recognise its own events after an ambiguous commit.
    """
    command_id = command_id or uuid4().hex
    token = command_id_cvar.set(command_id)
    try:
        yield command_id
    finally:
        command_id_cvar.reset(token)
