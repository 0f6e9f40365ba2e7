"""Checkpoints: the application that stores each org's signed checkpoints, in order.

A separate application, so checkpoints live in a table (on SQLite, a file) of their
own, next to the tasks' events and as append-only as they are. One stream per org;
a checkpoint's `seq` is its version in that stream, so two writers racing on one
org store one checkpoint and the other gets a conflict (and signs again later).

Like the step logs, a write reads only the stream's last event, never the whole
stream: an org gathers a checkpoint a minute for years.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.checkpoints import (
    ChainHead,
    CheckpointSigned,
    Signer,
    checkpoint_stream_id,
    next_checkpoint,
)
from domain.context import command_scope
from domain.resilient_writes import Clock, ResilientApplication, reading, utc_now

READ_BATCH = 500
UndecodableCallback = Callable[[UUID, int, Exception], None]


def rfc3339(moment: datetime) -> str:
    """A time as checkpoints show it: UTC, microseconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Checkpoints(ResilientApplication):
    """Every org's signed checkpoints, one stream per org, in a store of their own."""

    name = "Checkpoints"

    def __init__(self, env: dict[str, str] | None = None, *, clock: Clock = utc_now) -> None:
        super().__init__(env, clock)

    # ------------------------------------------------------------------ commands

    def record(self, org: str, heads: list[ChainHead], signer: Signer) -> CheckpointSigned | None:
        """Signs and stores the org's next checkpoint over `heads`.

        None when no head moved since the last checkpoint, or when another writer
        stored this seq first (its checkpoint stands; the next tick signs again).
        """
        with command_scope() as command_id:
            last = self.latest(org)
            checkpoint = next_checkpoint(
                last, org=org, heads=heads, signed_at=rfc3339(self.clock()), signer=signer
            )
            if checkpoint is None:
                return None
            saved = self._save_as_command(
                checkpoint.originator_id, last.seq if last else 0, command_id, checkpoint
            )
            return checkpoint if saved is not None else None

    # ------------------------------------------------------------------ queries

    def latest(self, org: str) -> CheckpointSigned | None:
        """The org's latest checkpoint (one indexed read), or None before the first."""
        with reading():
            last: Any = next(
                iter(self.events.get(checkpoint_stream_id(org), desc=True, limit=1)), None
            )
        return last if isinstance(last, CheckpointSigned) else None

    def all(
        self, org: str | None = None, *, on_undecodable: UndecodableCallback | None = None
    ) -> Iterator[CheckpointSigned]:
        """Every stored checkpoint (of one org, or of all), in the order they were stored.

        A stored record that does not decode as a checkpoint is passed to
        `on_undecodable` (stream id, version, error), or raises without one.
        """
        stream = checkpoint_stream_id(org) if org is not None else None
        start: int | None = None
        while True:
            with reading():
                notifications = self.recorder.select_notifications(
                    start=start, limit=READ_BATCH, inclusive_of_start=False
                )
            for notification in notifications:
                if stream is not None and UUID(str(notification.originator_id)) != stream:
                    continue  # another org's: not even decoded
                try:
                    event = self.mapper.to_domain_event(notification)
                except Exception as error:  # whatever a forged record makes the decoder raise
                    if on_undecodable is None:
                        raise
                    on_undecodable(
                        UUID(str(notification.originator_id)),
                        notification.originator_version,
                        error,
                    )
                    continue
                if isinstance(event, CheckpointSigned) and org in (None, event.org):
                    yield event
            if len(notifications) < READ_BATCH:
                return
            start = notifications[-1].id
