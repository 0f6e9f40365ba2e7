"""A background thread that works only while it holds its election.

Projection runners and the timeout enforcer share this shape: several processes
start one each, the coordinator (a PostgreSQL advisory lock or a SQLite file lock)
lets one of them work, the others stand by and take over when it goes away. An
error is logged, the leadership released, and the thread starts over after a
growing back-off, so a database outage never kills the thread.
"""

from __future__ import annotations

import logging
import threading

from projections.coordination import Coordinator
from projections.tracked_view import PositionConflict

logger = logging.getLogger("tasktrail.background")

FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 5.0


class ElectedWorker:
    """Subclasses say what to do while leader (`work_while_leader`) and their `name`."""

    name = "background worker"

    def __init__(self, coordinator: Coordinator):
        self.coordinator = coordinator
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def work_while_leader(self) -> None:
        """Work until stopped or no longer leader; return normally, or raise to start over."""
        raise NotImplementedError

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def is_leader(self) -> bool:
        return self.is_running and self.coordinator.still_leader()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.coordinator.close()

    def run(self) -> None:
        """The thread's body: elect, work, and start over after an error."""
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stop.is_set():
            if not self.coordinator.acquire(self._stop):
                break
            try:
                self.work_while_leader()
                backoff = FIRST_BACKOFF_SECONDS
            except PositionConflict as conflict:
                logger.warning("%s: %s; starting over", self.name, conflict)
            except Exception:
                self.errors += 1
                logger.exception("%s failed; retrying in %.2f s", self.name, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            finally:
                self.coordinator.release()
