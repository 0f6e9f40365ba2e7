"""`/metrics`: the service's Prometheus exposition (no token needed).

Per process (each `--workers` process has its own; Prometheus scrapes each):

- `tasktrail_http_requests_total{method,route,status}` and
  `tasktrail_http_request_duration_seconds{method,route}` (histogram): `route` is the
  matched template (`/v1/tasks/{task_id}`), or `unmatched`; never a raw path.
- `tasktrail_concurrency_conflicts_retried_total{app}`: optimistic-concurrency races
  lost and retried by this process's task ledger (`tasks`) and step logs (`logs`).
- `tasktrail_timeouts_fired_total`: tasks this process's timeout enforcer timed out.

Read from the store at each scrape (deployment-wide):

- `tasktrail_events_appended_total{app}`: events appended to the store (its last
  global position; PostgreSQL positions may skip a number after a rolled-back write).
- `tasktrail_projection_position{projection}`, `tasktrail_projection_lag_events{projection}`.
- `tasktrail_store_up`: 1 when the store answered this scrape, else 0 (and the
  store-read families above are left out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.logging_setup import route_template

logger = logging.getLogger("tasktrail.metrics")
router = APIRouter(tags=["operations"])


class HttpMetrics:
    """Pure ASGI middleware counting requests and timing them, by route template."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

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


class ServiceCollector(Collector):
    """Reads the domain's and the projections' own counters at each scrape."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        services: Any = getattr(self.app.state, "services", None)
        if services is None:
            return
        conflicts = CounterMetricFamily(
            "tasktrail_concurrency_conflicts_retried",
            "Optimistic-concurrency races lost and retried by this process.",
            labels=["app"],
        )
        conflicts.add_metric(["tasks"], services.ledger.conflicts_retried)
        conflicts.add_metric(["logs"], services.logs.conflicts_retried)
        yield conflicts

        projections = services.projections
        enforcer = projections.enforcer if projections is not None else None
        yield CounterMetricFamily(
            "tasktrail_timeouts_fired",
            "Tasks timed out by this process's timeout enforcer.",
            value=enforcer.fired if enforcer is not None else 0,
        )

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
    """The Prometheus text exposition of this process."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """A registry of this app's own (apps in one process never share counters)."""
    registry = CollectorRegistry()
    registry.register(ServiceCollector(app))
    app.state.metrics_registry = registry
    requests = Counter(
        "tasktrail_http_requests",
        "HTTP requests answered, by method, route template and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "tasktrail_http_request_duration_seconds",
        "Time to answer an HTTP request (to the end of its body), by route template.",
        ["method", "route"],
        registry=registry,
    )
    app.include_router(router)
    app.add_middleware(HttpMetrics, requests=requests, latency=latency)
