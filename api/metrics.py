"""`/metrics`: the service's Prometheus exposition (no token needed).

Counted by the processes (`serve --workers N`: summed over the web processes and the
supervisor that runs the background work, whichever web process answers the scrape):

- `tasktrail_http_requests_total{method,route,status}` and
  `tasktrail_http_request_duration_seconds{method,route}` (histogram): `route` is the
  matched template (`/v1/tasks/{task_id}`), or `unmatched`; never a raw path.
- `tasktrail_concurrency_conflicts_retried_total{app}`: optimistic-concurrency races
  lost and retried by the task ledger (`tasks`) and the step logs (`logs`).
- `tasktrail_timeouts_fired_total`: tasks the timeout enforcer timed out.

Read from the store at each scrape (deployment-wide):

- `tasktrail_events_appended_total{app}`: events appended to the store (its last
  global position; PostgreSQL positions may skip a number after a rolled-back write).
- `tasktrail_projection_position{projection}`, `tasktrail_projection_lag_events{projection}`.
- `tasktrail_store_up`: 1 when the store answered this scrape, else 0 (and the
  store-read families above are left out).

Several processes: `serve --workers N` puts prometheus-client in multiprocess mode
(`shared_across_processes`): each process keeps its counters in files of one fresh
directory, and the web process that answers a scrape sums them all. The families read
from the store need no such care: every process reads the same store.

The ledger, the step logs and the enforcer count in plain integers (the domain knows
nothing of Prometheus); `ProcessCounters` publishes their increase after every request,
before every scrape, and (in the supervisor, which answers no scrape) twice a second.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.logging_setup import route_template

if TYPE_CHECKING:
    from domain.application import TaskLedger
    from domain.log_application import StepLogs
    from projections.runtime import Projections

logger = logging.getLogger("tasktrail.metrics")
router = APIRouter(tags=["operations"])

# prometheus-client's own name for the directory of multiprocess mode.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# How often the supervisor of `serve --workers N` publishes the background work's counts.
PUBLISH_SECONDS = 0.5


class ProcessCounters:
    """This process's conflicts retried and timeouts fired, as Prometheus counters.

    The ledger, the logs and the enforcer keep plain integers; `publish` adds what they
    grew by since it last looked.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.conflicts = Counter(
            "tasktrail_concurrency_conflicts_retried",
            "Optimistic-concurrency races lost and retried.",
            ["app"],
            registry=registry,
        )
        self.timeouts = Counter(
            "tasktrail_timeouts_fired",
            "Tasks timed out by the timeout enforcer.",
            registry=registry,
        )
        for app in ("tasks", "logs"):
            self.conflicts.labels(app)  # exposed (at 0) before the first race
        self._seen: dict[str, int] = {}
        # The scrape route runs in the thread pool, the request middleware on the loop.
        self._lock = threading.Lock()

    def publish(
        self,
        ledger: TaskLedger,
        logs: StepLogs | None = None,
        projections: Projections | None = None,
    ) -> None:
        enforcer = projections.enforcer if projections is not None else None
        with self._lock:
            self._add("tasks", ledger.conflicts_retried, self.conflicts.labels("tasks"))
            if logs is not None:
                self._add("logs", logs.conflicts_retried, self.conflicts.labels("logs"))
            self._add("timeouts", enforcer.fired if enforcer is not None else 0, self.timeouts)

    def _add(self, name: str, total: int, counter: Counter) -> None:
        seen = self._seen.get(name, 0)
        # Lower than last time: a new counting object (an enforcer restarted), all of it new.
        counter.inc(total - seen if total >= seen else total)
        self._seen[name] = total

    def publish_services(self, app: FastAPI) -> None:
        """Publishes the counts of the app's services (none before its lifespan began)."""
        services: Any = getattr(app.state, "services", None)
        if services is not None:
            self.publish(services.ledger, services.logs, services.projections)


class HttpMetrics:
    """Pure ASGI middleware counting requests and timing them, by route template."""

    def __init__(
        self,
        app: ASGIApp,
        requests: Counter,
        latency: Histogram,
        after_request: Callable[[], None] | None,
    ) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        self.after_request = after_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observing(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing)
        finally:
            route = route_template(scope)
            method = scope["method"]
            self.requests.labels(method, route, str(status)).inc()
            self.latency.labels(method, route).observe(time.perf_counter() - started)
            if self.after_request is not None:
                self.after_request()


class StoreCollector(Collector):
    """Reads the store's head and the projections' positions at each scrape."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        services: Any = getattr(self.app.state, "services", None)
        if services is None:
            return
        projections = services.projections
        up = GaugeMetricFamily("tasktrail_store_up", "Whether the store answered this scrape.")
        try:
            heads = {
                "tasks": services.ledger.recorder.max_notification_id() or 0,
                "logs": services.logs.recorder.max_notification_id() or 0,
            }
            status = projections.status() if projections is not None else []
        except Exception as error:  # an unreachable store must not break the scrape
            logger.warning("metrics: the store did not answer: %s", type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        appended = CounterMetricFamily(
            "tasktrail_events_appended",
            "Events appended to the store (its last global position), deployment-wide.",
            labels=["app"],
        )
        for name, head in heads.items():
            appended.add_metric([name], head)
        yield appended
        position = GaugeMetricFamily(
            "tasktrail_projection_position",
            "The last position each projection has processed.",
            labels=["projection"],
        )
        lag = GaugeMetricFamily(
            "tasktrail_projection_lag_events",
            "Events stored but not yet processed by each projection.",
            labels=["projection"],
        )
        for entry in status:
            position.add_metric([entry["name"]], entry["position"])
            lag.add_metric([entry["name"]], entry["lag"])
        yield position
        yield lag


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics(request: Request) -> Response:
    """The Prometheus text exposition (of every process, under `serve --workers N`)."""
    request.app.state.process_counters.publish_services(request.app)
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """A registry of this app's own (apps in one process never share counters), or, in
    multiprocess mode, one that reads every process's files."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(app))
    shared = os.environ.get(MULTIPROCESS_DIR)
    if shared:
        MultiProcessCollector(registry, path=shared)
    # In multiprocess mode the counters live in the files, read back by the collector.
    counted_in = None if shared else registry
    app.state.metrics_registry = registry
    app.state.process_counters = counters = ProcessCounters(counted_in)
    requests = Counter(
        "tasktrail_http_requests",
        "HTTP requests answered, by method, route template and status.",
        ["method", "route", "status"],
        registry=counted_in,
    )
    latency = Histogram(
        "tasktrail_http_request_duration_seconds",
        "Time to answer an HTTP request (to the end of its body), by route template.",
        ["method", "route"],
        registry=counted_in,
    )
    app.include_router(router)
    app.add_middleware(
        HttpMetrics,
        requests=requests,
        latency=latency,
        # Shared across processes, a race this request lost must be in the files before
        # another process's scrape; alone, the scrape publishes what it shows.
        after_request=(lambda: counters.publish_services(app)) if shared else None,
    )


@contextmanager
def shared_across_processes() -> Iterator[Path]:
    """Multiprocess mode for this process and the web processes it starts (they inherit
    the variable), in a fresh directory removed at the end: no count of an earlier run
    is ever summed in."""
    directory = Path(tempfile.mkdtemp(prefix="tasktrail-metrics-"))
    previous = os.environ.get(MULTIPROCESS_DIR)
    os.environ[MULTIPROCESS_DIR] = str(directory)
    # prometheus-client chooses where values live when it is imported, which this
    # process did before it knew the directory: choose again, before any counter exists.
    values.ValueClass = values.get_value_class()
    try:
        yield directory
    finally:
        if previous is None:
            del os.environ[MULTIPROCESS_DIR]
        else:
            os.environ[MULTIPROCESS_DIR] = previous
        values.ValueClass = values.get_value_class()
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def publishing(projections: Projections) -> Iterator[None]:
    """Publishes the background work's counts (the enforcer's timeouts, its ledger's
    conflicts) twice a second while the block runs, and once more at its end: the
    supervisor of `serve --workers N` answers no request that would publish them."""
    counters = ProcessCounters(registry=None)
    stop = threading.Event()

    def publish() -> None:
        counters.publish(projections.app, projections=projections)

    def loop() -> None:
        while not stop.wait(PUBLISH_SECONDS):
            publish()

    thread = threading.Thread(target=loop, name="metrics publisher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        publish()
