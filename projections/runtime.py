"""The read models of one store: their views, their runners, status and rebuild.

`Projections` is what a process holds: the API reads its views; `start()` runs one
runner per projection in this process (elected: only one process at a time works
on a projection); the CLI asks it for `status()` and `rebuild()`.

Where views live: next to the events. PostgreSQL: in the store's schema. SQLite: in
the events' file. memory://: a SQLite file of its own in a temporary directory
(removed on `close()`), so memory and SQLite share one code path.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from projections.batched import BatchedProjection
from projections.chain_heads import ChainHeadsProjection, ChainHeadView
from projections.chain_heads_sql import PostgresChainHeads, SQLiteChainHeads
from projections.coordination import (
    Coordinator,
    FileLockCoordinator,
    PostgresCoordinator,
    store_lock_key,
)
from projections.deadlines import DeadlineProjection, DeadlineView
from projections.deadlines_sql import PostgresDeadlines, SQLiteDeadlines
from projections.event_feed import EventFeedProjection, OrgEventView
from projections.event_feed_sql import PostgresEventFeed, SQLiteEventFeed
from projections.runner import BatchCallback, BatchRunner, catch_up
from projections.task_list import TaskListProjection, TaskListView
from projections.task_list_sql import PostgresTaskList, SQLiteTaskList
from projections.timeout_enforcer import ENFORCER, TimeoutEnforcer
from store.config import StoreConfig

# name → (projection class, PostgreSQL view, SQLite view)
CATALOGUE: dict[str, tuple[type[BatchedProjection[Any]], type, type]] = {
    "task_list": (TaskListProjection, PostgresTaskList, SQLiteTaskList),
    "event_feed": (EventFeedProjection, PostgresEventFeed, SQLiteEventFeed),
    "deadlines": (DeadlineProjection, PostgresDeadlines, SQLiteDeadlines),
    "chain_heads": (ChainHeadsProjection, PostgresChainHeads, SQLiteChainHeads),
}
REBUILD_BATCH_SIZE = 10_000


class RunnerActiveError(Exception):
    """Raised when a rebuild finds another runner working on the projection."""


@dataclass(frozen=True)
class Rebuilt:
    name: str
    events: int
    position: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Projections:
    """Every read model of one store, and (after `start()`) their runners and the enforcer."""

    def __init__(
        self,
        store: StoreConfig,
        app: Any,
        *,
        batch_size: int = 500,
        enforce_timeouts: bool = True,
        enforcer_interval: float = 0.2,
    ):
        self.store = store
        self.app = app
        self.batch_size = batch_size
        self.enforce_timeouts = enforce_timeouts
        self.enforcer_interval = enforcer_interval
        self.enforcer: TimeoutEnforcer | None = None
        self._tmpdir: Path | None = None
        self._factories: list[Any] = []
        self.projections: dict[str, BatchedProjection[Any]] = {}
        self.runners: dict[str, BatchRunner] = {}
        self._lock = threading.Lock()
        try:
            for name, (projection_class, pg_view, sqlite_view) in CATALOGUE.items():
                view_class = pg_view if store.backend == "postgres" else sqlite_view
                view = self._build_view(name, view_class)
                view.upstream = app.name
                self.projections[name] = projection_class(view=view)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- views

    def _build_view(self, name: str, view_class: type) -> Any:
        if self.store.backend == "postgres":
            # One connection kept per view (its runner); reads open overflow ones under load.
            env = {**self.store.env("tasks"), "POSTGRES_POOL_SIZE": "1"}
        elif self.store.backend == "sqlite":
            env = self.store.env("tasks")
        else:
            if self._tmpdir is None:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="tasktrail-views-"))
            env = {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self._tmpdir / "views.sqlite"),
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        factory = InfrastructureFactory.construct(Environment(name, env))
        self._factories.append(factory)
        return factory.tracking_recorder(view_class)

    @property
    def task_list(self) -> TaskListView:
        return self.projections["task_list"].view  # type: ignore[no-any-return]

    @property
    def event_feed(self) -> OrgEventView:
        return self.projections["event_feed"].view  # type: ignore[no-any-return]

    @property
    def deadlines(self) -> DeadlineView:
        return self.projections["deadlines"].view  # type: ignore[no-any-return]

    @property
    def chain_heads(self) -> ChainHeadView:
        return self.projections["chain_heads"].view  # type: ignore[no-any-return]

    def coordinator(self, name: str, *, listen: bool = True) -> Coordinator:
        """A new election (and, with `listen`, wake-ups on new events) for one role."""
        if self.store.backend == "postgres":
            key = store_lock_key(self.store.pg_dbname, self.store.pg_schema, name)
            channel = self.app.recorder.channel_name if listen else None
            return PostgresCoordinator(self.store.conninfo(), key, channel)
        if self.store.backend == "sqlite":
            assert self.store.sqlite_path is not None
            path = self.store.sqlite_path
            return FileLockCoordinator(path.with_name(f"{path.name}.{name}.lock"))
        return Coordinator()

    # ---------------------------------------------------------------- runners

    def start(self) -> None:
        """Runs a runner per projection, and the timeout enforcer, in this process.

        Each waits to be elected: one per deployment works, the others stand by.
        """
        with self._lock:
            if self.enforce_timeouts and self.enforcer is None:
                self.enforcer = TimeoutEnforcer(
                    self.app,
                    self.deadlines,
                    self.coordinator(ENFORCER, listen=False),
                    interval=self.enforcer_interval,
                )
                self.enforcer.start()
            for name, projection in self.projections.items():
                if name not in self.runners:
                    runner = BatchRunner(
                        self.app, projection, self.coordinator(name), batch_size=self.batch_size
                    )
                    runner.start()
                    self.runners[name] = runner

    def stop(self) -> None:
        with self._lock:
            runners, self.runners = self.runners, {}
            enforcer, self.enforcer = self.enforcer, None
        if enforcer is not None:
            enforcer.stop()
        for runner in runners.values():
            runner.stop()

    def close(self) -> None:
        self.stop()
        for factory in self._factories:
            factory.close()
        self._factories = []
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # ---------------------------------------------------------------- operations

    def status(self) -> list[dict[str, Any]]:
        """Each projection's position, the store's head and the lag between them."""
        head = self.app.recorder.max_notification_id() or 0
        result = []
        for name, projection in self.projections.items():
            position = projection.view.position()
            runner = self.runners.get(name)
            result.append(
                {
                    "name": name,
                    "position": position,
                    "head": head,
                    "lag": max(0, head - position),
                    "runner": (
                        "leader"
                        if runner is not None and runner.is_leader
                        else "standby"
                        if runner is not None and runner.is_running
                        else "none"
                    ),
                }
            )
        return result

    def rebuild(
        self, name: str, *, on_batch: BatchCallback | None = None, wait: bool = False
    ) -> Rebuilt:
        """Empties one view and replays every event from position 0 (holding the election)."""
        projection = self.projections[name]
        runner = self.runners.get(name)
        if runner is not None:
            raise RunnerActiveError(f"{name} has a runner in this process; stop it first")
        coordinator = self.coordinator(name, listen=False)  # it reads, it never waits for news
        if not coordinator.acquire(threading.Event(), wait=wait):
            coordinator.close()
            raise RunnerActiveError(
                f"another process runs projection {name} (tasktrail serve or worker); "
                "stop it before rebuilding"
            )
        try:
            projection.view.reset()
            started = time.perf_counter()
            head = self.app.recorder.max_notification_id() or 0
            events = 0

            def counted(position: int, notifications: int) -> None:
                nonlocal events
                events += notifications
                if on_batch is not None:
                    on_batch(position, notifications)

            position = catch_up(
                self.app,
                projection,
                until=head,
                batch_size=REBUILD_BATCH_SIZE,
                on_batch=counted,
            )
            return Rebuilt(name, events, position, time.perf_counter() - started)
        finally:
            coordinator.close()
