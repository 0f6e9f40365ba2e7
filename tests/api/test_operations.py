"""Operations: `/metrics`, `/readyz`, request ids and structured logs.

The store-outage behaviour (503s, readiness failing and recovering) is in
tests/e2e/test_fault_store_outage.py: it stops a private PostgreSQL cluster of its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from store.config import StoreConfig
from tests.api.conftest import Api, deploy_task, step
from tests.conftest import admin_connect

FAMILIES = {
    "tasktrail_http_requests",
    "tasktrail_http_request_duration_seconds",
    "tasktrail_events_appended",
    "tasktrail_concurrency_conflicts_retried",
    "tasktrail_projection_position",
    "tasktrail_projection_lag_events",
    "tasktrail_timeouts_fired",
    "tasktrail_store_up",
}


def scrape(api: Api) -> dict[str, list[Any]]:
    """Every sample of `/metrics` (asked without a token), by family name."""
    response = api.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return {f.name: list(f.samples) for f in text_string_to_metric_families(response.text)}


def value(families: dict[str, list[Any]], sample: str, **labels: str) -> float:
    family = next(name for name in families if sample.startswith(name))
    found = [s.value for s in families[family] if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, families[family])
    return float(found[0])


def test_metrics_expose_every_family_by_route_template(api: Api) -> None:
    task_id = api.create_task()["id"]
    api.get_task(task_id)
    assert api.call("GET", f"/v1/tasks/{task_id}/timeline", "auditor").status_code == 200
    assert api.client.get("/no/such/page").status_code == 404

    families = scrape(api)
    assert families.keys() >= FAMILIES, sorted(families)
    requests = families["tasktrail_http_requests"]
    routes = {s.labels["route"] for s in requests}
    assert {"/v1/tasks", "/v1/tasks/{task_id}", "/v1/tasks/{task_id}/timeline"} <= routes, routes
    assert "unmatched" in routes
    # Never a raw path: no label anywhere holds the task's id.
    for samples in families.values():
        for sample in samples:
            assert not any(task_id in v for v in sample.labels.values()), sample
    assert (
        value(
            families,
            "tasktrail_http_requests_total",
            method="POST",
            route="/v1/tasks",
            status="201",
        )
        == 1
    )
    assert (
        value(
            families,
            "tasktrail_http_request_duration_seconds_count",
            method="GET",
            route="/v1/tasks/{task_id}",
        )
        == 1
    )
    assert value(families, "tasktrail_store_up") == 1
    assert value(families, "tasktrail_events_appended_total", app="tasks") >= 1
    assert value(families, "tasktrail_timeouts_fired_total") == 0
    lags = {s.labels["projection"] for s in families["tasktrail_projection_lag_events"]}
    assert lags == {"task_list", "event_feed", "deadlines", "chain_heads"}


def test_metrics_follow_the_store(api: Api) -> None:
    before = scrape(api)
    api.create_task()
    after = scrape(api)
    appended = "tasktrail_events_appended_total"
    assert value(after, appended, app="tasks") > value(before, appended, app="tasks")
    # The projections are not running here: their lag is the events they have not seen.
    head = value(after, appended, app="tasks")
    assert value(after, "tasktrail_projection_lag_events", projection="task_list") == head
    # A lone writer loses no race: none is counted (a real one is, below).
    conflicts = "tasktrail_concurrency_conflicts_retried_total"
    assert value(after, conflicts, app="tasks") == value(after, conflicts, app="logs") == 0


def events_table(store_url: str) -> sql.Composable:
    return sql.Identifier(StoreConfig.from_url(store_url).pg_schema, "taskledger_events")


def writes_waiting_for(conn: psycopg.Connection, table: sql.Composable) -> int:
    """How many sessions wait for a lock on `table` (the writers' LOCK TABLE)."""
    query = sql.SQL(
        "SELECT count(*) FROM pg_locks WHERE relation = {}::regclass AND NOT granted"
    ).format(sql.Literal(table.as_string(conn)))
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def reporting_at_once(
    task_id: str, writers: list[tuple[Api, dict[str, Any]]]
) -> Iterator[list[httpx.Response]]:
    """Each (api, transition) reported from a thread of its own; their answers once done."""
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda a=api, t=transition: answers.append(a.report(task_id, t)))
        for api, transition in writers
    ]
    for thread in threads:
        thread.start()
    try:
        yield answers
    finally:
        for thread in threads:
            thread.join(60)


def wait_for_waiting_writes(conn: psycopg.Connection, table: sql.Composable, n: int) -> None:
    deadline = time.monotonic() + 30
    while writes_waiting_for(conn, table) < n:
        assert time.monotonic() < deadline, f"{n} writes never met at the event table's lock"
        time.sleep(0.02)


@pytest.mark.postgres
class TestALostRace:
    """Two service instances on one PostgreSQL write the same task at the same moment."""

    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        # A write waits up to 30 s for the event table's lock (not 3): the test holds
        # the lock until both writers wait behind it, however slow the machine is.
        return f"{pg_url}&lock_timeout=30"

    def test_a_lost_race_is_retried_and_counted(
        self, make_api: Callable[..., Api], store_url: str
    ) -> None:
        first, second = make_api(), make_api()  # two processes' worth, one store
        task_id = first.create_task(jobs=[one_step_job("a"), one_step_job("b")])["id"]
        # Each instance reports once first (FastAPI builds its routes on first use).
        first.reported(task_id, step("a", "s", "in_progress"))
        second.reported(task_id, step("b", "s", "in_progress"))
        before = conflicts_retried(first) + conflicts_retried(second)
        table = events_table(store_url)
        with admin_connect() as holder, admin_connect() as watcher:
            # Another session holds the event table's write lock (reads go on), so both
            # writers load the same version of the task, then wait to store the next.
            holder.execute("BEGIN")
            holder.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
            writers = [(first, step("a", "s", "done")), (second, step("b", "s", "done"))]
            with reporting_at_once(task_id, writers) as answers:
                try:
                    wait_for_waiting_writes(watcher, table, 2)
                finally:
                    # Released: one write stores its version; the other loses the race,
                    # reloads, re-applies its change and stores the version after it.
                    holder.execute("COMMIT")
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        task = first.get_task(task_id)
        assert task["status"] == "done"
        assert task["version"] == max(a.json()["version"] for a in answers)
        # Exactly one of the two instances lost (and retried) once, and /metrics says so.
        assert conflicts_retried(first) + conflicts_retried(second) == before + 1


def one_step_job(key: str) -> dict[str, Any]:
    return {"key": key, "name": f"Job {key}", "steps": [{"key": "s", "name": "Step"}]}


def conflicts_retried(api: Api) -> float:
    """The instance's lost races retried, as its `/metrics` tells them."""
    return value(scrape(api), "tasktrail_concurrency_conflicts_retried_total", app="tasks")


def test_metrics_count_the_timeouts_fired(make_api: Callable[..., Api]) -> None:
    api = make_api(run_projections=True)
    task_id = api.create_task(timeout_seconds=1)["id"]
    api.reported(task_id, step("build", "clone", "in_progress"))
    deadline = time.monotonic() + 10
    while value(scrape(api), "tasktrail_timeouts_fired_total") < 1:
        assert time.monotonic() < deadline, "no timeout counted"
        time.sleep(0.05)
    assert api.get_task(task_id)["status"] == "timed_out"


PROJECTIONS = {"task_list", "event_feed", "deadlines", "chain_heads"}


def readiness(api: Api) -> dict[str, Any]:
    response = api.client.get("/readyz")
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert body["status"] == "ready", body
    assert {p["name"] for p in body["projections"]} == PROJECTIONS, body
    return body


def test_readyz_reports_positions_and_lag(api: Api) -> None:
    api.create_task()
    body = readiness(api)
    assert body["position"] >= 1
    # No runner applies anything here: every projection lags by the whole store.
    for projection in body["projections"]:
        assert projection["position"] == 0, projection
        assert projection["lag"] == body["position"], projection


def test_readyz_lag_falls_to_zero_once_the_runners_catch_up(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(run_projections=True)
    api.create_task()
    deadline = time.monotonic() + 10
    body = readiness(api)
    while any(p["lag"] for p in body["projections"]):
        assert time.monotonic() < deadline, f"the projections never caught up: {body}"
        time.sleep(0.05)
        body = readiness(api)
    assert body["position"] >= 1
    for projection in body["projections"]:
        assert projection["position"] == body["position"], projection


@pytest.mark.parametrize("supplied", [True, False], ids=["supplied", "generated"])
def test_the_request_id_is_echoed_and_recorded_in_the_events(api: Api, supplied: bool) -> None:
    headers = {"X-Request-ID": "req-ops-42"} if supplied else {}
    response = api.call("POST", "/v1/tasks", json=deploy_task(), headers=headers)
    assert response.status_code == 201, response.text
    request_id = response.headers["x-request-id"]
    if supplied:
        assert request_id == "req-ops-42"
    else:
        assert len(request_id) == 32, request_id
    # The stored events (the ledger's own timeline) carry it in their metadata.
    events = api.ledger.timeline(UUID(response.json()["id"]))
    assert events and all(e["request_id"] == request_id for e in events), events
    # Every answer carries one, errors and unauthenticated calls included.
    assert api.client.get("/v1/tasks").headers["x-request-id"]
    assert (
        api.client.get("/healthz", headers={"X-Request-ID": "hc-1"}).headers["x-request-id"]
        == "hc-1"
    )


def test_a_request_id_that_cannot_be_echoed_is_replaced(api: Api) -> None:
    response = api.client.get("/healthz", headers={"X-Request-ID": "a b\tc"})
    assert response.headers["x-request-id"] not in ("a b\tc", "")


def test_logs_are_json_lines_with_the_request_and_never_a_token(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    task_id = api.create_task()["id"]
    api.call("GET", f"/v1/tasks/{task_id}", "reader", headers={"X-Request-ID": "log-me"})
    api.call("GET", "/v1/tasks", "reader", headers={"Authorization": "Bearer tt_wrong_secret"})
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [e for e in lines if e["logger"] == "tasktrail.access"]
    assert len(access) == 3, err
    for entry in access:
        assert entry.keys() >= {
            "time",
            "level",
            "logger",
            "message",
            "request_id",
            "method",
            "route",
            "status",
            "duration_ms",
        }, entry
    read = next(e for e in access if e["request_id"] == "log-me")
    assert (read["method"], read["route"], read["status"]) == ("GET", "/v1/tasks/{task_id}", 200)
    assert task_id not in err
    assert "tt_wrong_secret" not in err
    assert not any(token in err for token in api.tokens.values())
