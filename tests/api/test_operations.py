"""Operations: `/metrics`, `/readyz`, request ids and structured logs.

The store-outage behaviour (503s, readiness failing and recovering) is in
tests/e2e/test_fault_store_outage.py: it stops a private PostgreSQL cluster of its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Api, deploy_task, step

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


def test_metrics_follow_the_store_and_the_domain_counters(api: Api) -> None:
    before = scrape(api)
    api.create_task()
    api.ledger.conflicts_retried += 3  # as lost races would
    after = scrape(api)
    appended = "tasktrail_events_appended_total"
    assert value(after, appended, app="tasks") > value(before, appended, app="tasks")
    conflicts = "tasktrail_concurrency_conflicts_retried_total"
    assert value(after, conflicts, app="tasks") == value(before, conflicts, app="tasks") + 3
    assert value(after, conflicts, app="logs") == 0
    # The projections are not running here: their lag is the events they have not seen.
    head = value(after, appended, app="tasks")
    assert value(after, "tasktrail_projection_lag_events", projection="task_list") == head


def test_metrics_count_the_timeouts_fired(make_api: Callable[..., Api]) -> None:
    api = make_api(run_projections=True)
    task_id = api.create_task(timeout_seconds=1)["id"]
    api.reported(task_id, step("build", "clone", "in_progress"))
    deadline = time.monotonic() + 10
    while value(scrape(api), "tasktrail_timeouts_fired_total") < 1:
        assert time.monotonic() < deadline, "no timeout counted"
        time.sleep(0.05)
    assert api.get_task(task_id)["status"] == "timed_out"


def test_readyz_reports_positions_and_lag(api: Api) -> None:
    api.create_task()
    response = api.client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["position"] >= 1
    assert {p["name"] for p in body["projections"]} == {
        "task_list",
        "event_feed",
        "deadlines",
        "chain_heads",
    }


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
