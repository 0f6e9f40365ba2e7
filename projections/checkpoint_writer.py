"""The checkpoint writer: signs a checkpoint per org every few seconds, while elected.

A thread that, while it holds its election (one writer per deployment, like the
timeout enforcer: its own advisory lock or lock file), looks at the chain heads
every `interval` seconds (`TASKTRAIL_CHECKPOINT_SECONDS`, default 60) and, for
each org whose latest task event is past its last checkpoint, signs and stores
the next one. An org with no new task events gets no new checkpoint.

Two writers racing (an election lost mid-tick) store one checkpoint per seq: the
second one's write conflicts and is dropped. An error is logged; the election
starts over after a back-off (`projections.elected`).
"""

from __future__ import annotations

import logging

from domain.checkpoint_application import Checkpoints
from domain.checkpoints import Signer
from projections.chain_heads import ChainHeadView
from projections.coordination import Coordinator
from projections.elected import ElectedWorker

logger = logging.getLogger("tasktrail.checkpoints")

CHECKPOINT_WRITER = "checkpoint_writer"  # its election's name


class CheckpointWriter(ElectedWorker):
    """Signs each org's next checkpoint when its chains moved, while elected."""

    name = CHECKPOINT_WRITER

    def __init__(
        self,
        checkpoints: Checkpoints,
        heads: ChainHeadView,
        signer: Signer,
        coordinator: Coordinator,
        *,
        interval: float = 60.0,
    ):
        super().__init__(coordinator)
        self.checkpoints = checkpoints
        self.heads = heads
        self.signer = signer
        self.interval = interval
        self.written = 0

    def work_while_leader(self) -> None:
        while not self._stop.is_set() and self.coordinator.still_leader():
            self.write_due()
            self._stop.wait(self.interval)

    def write_due(self) -> int:
        """Signs a checkpoint for every org whose chains moved since its last; how many."""
        written = 0
        for org, latest in sorted(self.heads.latest_positions().items()):
            last = self.checkpoints.latest(org)
            if last is not None and last.position >= latest:
                continue
            checkpoint = self.checkpoints.record(org, self.heads.heads(org), self.signer)
            if checkpoint is not None:
                written += 1
                logger.info(
                    "checkpoint %s of org %s signed at position %s",
                    checkpoint.seq,
                    org,
                    checkpoint.position,
                )
        self.written += written
        return written
