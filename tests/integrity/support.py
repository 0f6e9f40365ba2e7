"""A store with everything checkpoints need, driven step by step (no background threads)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID

from domain.application import TaskLedger
from domain.checkpoint_application import Checkpoints
from domain.status import Status
from domain.work import Transition
from integrity.signing import SigningKey
from projections.checkpoint_writer import CheckpointWriter
from projections.coordination import Coordinator
from projections.runner import catch_up
from projections.runtime import Projections
from store.config import StoreConfig
from tests.application.support import create_executable, job


@dataclass
class Trail:
    """The task ledger, its chain heads, the checkpoints and the key that signs them."""

    store: StoreConfig
    ledger: TaskLedger
    projections: Projections
    checkpoints: Checkpoints
    key: SigningKey

    def checkpoint(self) -> int:
        """Brings the chain heads up to date and signs what is due; how many were signed."""
        catch_up(self.ledger, self.projections.projections["chain_heads"])
        writer = CheckpointWriter(
            self.checkpoints, self.projections.chain_heads, self.key, Coordinator()
        )
        return writer.write_due()

    def new_task(self, org: str = "acme") -> UUID:
        return create_executable(self.ledger, job("build", "compile"), org=org)

    def queue(self, task_id: UUID) -> None:
        self.ledger.report(task_id, [Transition(Status.QUEUED)])

    def start(self, task_id: UUID) -> None:
        self.ledger.report(task_id, [Transition(Status.IN_PROGRESS, job="build", step="compile")])

    def version(self, task_id: UUID) -> int:
        return int(self.ledger.get_task(task_id)["version"])


@contextmanager
def open_trail(store_url: str) -> Iterator[Trail]:
    store = StoreConfig.from_url(store_url)
    ledger = TaskLedger(store.env("tasks"))
    projections = Projections(store, ledger, enforce_timeouts=False)
    checkpoints = Checkpoints(store.env("checkpoints"))
    try:
        yield Trail(store, ledger, projections, checkpoints, SigningKey.generate())
    finally:
        checkpoints.close()
        projections.close()
        ledger.close()
