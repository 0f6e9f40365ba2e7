"""The timeout enforcer: issues the time-out command when a task's deadline passes.

A thread that, while it is elected (one enforcer per deployment, like a projection
runner: its own advisory lock or lock file), asks the deadline index every
`interval` seconds for the tasks whose deadline passed and calls
`TaskLedger.time_out` for each, as the service itself (the system actor). The
command is a no-op on a task that already finished, so two enforcers racing (an
election lost mid-tick, two hosts) still record one `TaskTimedOut`.

A timeout fires within `interval` plus the index's lag (milliseconds) of its
deadline, with no request arriving. Refusals ("not yet", "not started") are
expected around the edges and ignored; any other error is logged and the loop
carries on.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from domain.application_errors import TaskNotFoundError
from domain.context import SYSTEM_ACTOR, acting_as
from domain.errors import ConflictError
from projections.coordination import Coordinator
from projections.deadlines import DeadlineView
from projections.elected import ElectedWorker

logger = logging.getLogger("tasktrail.timeouts")

ENFORCER = "timeout_enforcer"  # its election's name


class TimeoutEnforcer(ElectedWorker):
    """Times out the tasks whose deadline passed, while elected."""

    name = ENFORCER

    def __init__(
        self,
        ledger: Any,
        deadlines: DeadlineView,
        coordinator: Coordinator,
        *,
        interval: float = 0.2,
        batch_size: int = 100,
    ):
        super().__init__(coordinator)
        self.ledger = ledger
        self.deadlines = deadlines
        # The coordinator's wait between two looks is the enforcer's tick.
        self.coordinator.poll_interval = interval
        self.batch_size = batch_size
        self.fired = 0
        self._handled: set[UUID] = set()  # timed out (or found finished), still in the index

    def work_while_leader(self) -> None:
        while not self._stop.is_set() and self.coordinator.still_leader():
            self.enforce()
            self.coordinator.wait_for_events(self._stop)

    def enforce(self) -> int:
        """One look at the index: times out every due task; how many it timed out."""
        due = self.deadlines.due(self.ledger.clock(), limit=self.batch_size)
        self._handled &= set(due)  # the index dropped the others: forget them
        fired = 0
        for task_id in due:
            if task_id not in self._handled and self._time_out(task_id):
                fired += 1
        self.fired += fired
        return fired

    def _time_out(self, task_id: UUID) -> bool:
        try:
            with acting_as(SYSTEM_ACTOR):
                written = self.ledger.time_out(task_id)
        except ConflictError as refusal:  # not started, or not yet by the ledger's clock
            logger.debug("task %s not timed out: %s", task_id, refusal)
            return False
        except TaskNotFoundError:
            logger.warning("deadline index names task %s, which does not exist", task_id)
            self._handled.add(task_id)
            return False
        except Exception:
            self.errors += 1
            logger.exception("timing out task %s failed; retrying on the next tick", task_id)
            return False
        self._handled.add(task_id)
        if written is None:  # already finished (another enforcer, or the executor)
            return False
        logger.info("task %s timed out (position %s)", task_id, written.position)
        return True
