"""Chain heads: each task chain's latest event (version, hash, position), by org.

**Async** projection, like the task list: a runner applies events in batches, rows
and position in one transaction. **Rebuilt** by `tasktrail projections rebuild
chain_heads` (tables dropped, every event replayed from position 0).

One small row per task: its org (from `TaskCreated`), and the version, hash and
global position of its latest event. The checkpoint writer reads an org's rows to
sign where every chain of the org stands, and which moved since its last checkpoint.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Mapper, Notification

from domain.checkpoints import ChainHead
from domain.task import Task
from projections.batched import BatchedProjection, EventRecord
from projections.decoding import event_class
from projections.tracked_view import TrackedView


class ChainHeadWriter(Protocol):
    """The commands one batch of events gives the chain heads."""

    def advance(
        self, task_id: UUID, version: int, hash: str, position: int, *, org: str | None = None
    ) -> None: ...


class ChainHeadView(TrackedView):
    """The chain heads' table, and the reads the checkpoint writer asks of it."""

    @abstractmethod
    def latest_positions(self) -> dict[str, int]:
        """Each org's latest task event position (orgs without task events are left out)."""

    @abstractmethod
    def heads(self, org: str) -> list[ChainHead]:
        """Every task chain head of the org, by task id (one consistent read)."""


class ChainHeadsProjection(BatchedProjection[ChainHeadView]):
    """Every task event → its task's head row."""

    name = "chain_heads"
    event_classes = (Task.Event,)

    def events(
        self, notifications: Sequence[Notification], mapper: Mapper[Any]
    ) -> list[tuple[EventRecord, int]]:
        """Each task's last chained event in the batch, and its creation (which names the
        org): the events in between would only move a head the last one moves further,
        so they are not even parsed."""
        decoder = self.decoder(mapper)
        events, headed = [], set()
        for notification in reversed(notifications):
            task_id = notification.originator_id
            created = issubclass(event_class(notification.topic), Task.TaskCreated)
            if task_id in headed and not created:
                continue
            record = self.record(notification, decoder)
            if record is None:
                continue
            if record.state.get("hash") is not None:
                headed.add(task_id)
            events.append((record, notification.id))
        events.reverse()
        return events

    @singledispatchmethod
    def apply(self, event: EventRecord, position: int, batch: ChainHeadWriter) -> None:
        """A later event of a task: its head moves."""
        self._advance(event, position, batch)

    @apply.register(Task.TaskCreated)
    def _created(self, event: EventRecord, position: int, batch: ChainHeadWriter) -> None:
        self._advance(event, position, batch, org=event.state["org"])

    @staticmethod
    def _advance(
        event: EventRecord, position: int, batch: ChainHeadWriter, org: str | None = None
    ) -> None:
        hash = event.state.get("hash")
        if hash is None:  # stored before events were chained: nothing to vouch for
            return
        batch.advance(event.originator_id, event.originator_version, hash, position, org=org)
