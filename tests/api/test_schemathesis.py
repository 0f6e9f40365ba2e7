"""Schemathesis against the app's own `/openapi.json`, in-process (no network).

Every operation gets a bounded number of generated requests, valid and invalid,
as the platform administrator. Each answer must be no 5xx, carry a status and a
content type the document declares for it, match the declared schema, and be a
problem document when it is an error. The number of cases run is printed (`-s`
shows it) so the figure can be reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.services import Services
from tests.api.conftest import ADMIN_TOKEN, PROBLEM, deploy_task, issue_tokens, settings_for

AS_ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES_PER_OPERATION = 12
# Endless Server-Sent Events streams: cut after this long (schemathesis keeps what came).
STREAM_SECONDS = 0.5
BUDGET_SECONDS = 60


@pytest.fixture
def store_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """SQLite: real SQL behind the filters, and cheaper than a PostgreSQL schema per run."""
    return f"sqlite:///{tmp_path / 'fuzz.sqlite'}"


@pytest.fixture
def schema(store_url: str, tmp_path) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    services = Services.start(
        settings_for(
            store_url,
            tmp_path,
            run_projections=True,
            sse_heartbeat_seconds=0.2,
            min_position_timeout_seconds=0.1,
        )
    )
    services.projections.start()  # type: ignore[union-attr]
    issue_tokens(services.ledger)
    app = create_app(services=services)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        shutdown_lifespans()
        services.close()


@pytest.fixture
def known_task(schema: Any) -> str:
    """A task of org acme, so generated reads of a task also meet one that exists."""
    client = schemathesis.python.asgi.get_client(schema.app)
    with client:
        answer = client.post("/v1/tasks", json={**deploy_task(), "org": "acme"}, headers=AS_ADMIN)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def is_problem_when_an_error(response: Any) -> None:
    if response.status_code >= 400:
        media = response.headers.get("content-type", [""])
        media = (media[0] if isinstance(media, list) else media).split(";")[0].strip()
        assert media == PROBLEM, (response.status_code, media, response.text[:300])


def is_a_retryable_refusal(response: Any) -> bool:
    """A documented 503 with Retry-After: `min_position` not reached in time, which a
    generated position far ahead of the store asks for. Any other 5xx is a failure."""
    return response.status_code == 503 and "retry-after" in {k.lower() for k in response.headers}


CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ALL_CHECKS = [not_a_server_error, *CHECKS]


def call_and_check(case: Case, positive: bool, known_task: str) -> None:
    if positive and "task_id" in (case.path_parameters or {}):
        case.path_parameters["task_id"] = known_task
    streams = case.operation.path.endswith("/stream")
    response = case.call(headers=AS_ADMIN, timeout=STREAM_SECONDS if streams else 10)
    checks = CHECKS if is_a_retryable_refusal(response) else ALL_CHECKS
    case.validate_response(response, checks=checks, headers=AS_ADMIN)
    is_problem_when_an_error(response)


def run_cases(operation: Any, mode: GenerationMode, known_task: str) -> int:
    """Runs the operation's generated cases in `mode`; returns how many ran."""
    ran = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        nonlocal ran
        ran += 1
        call_and_check(case, mode is GenerationMode.POSITIVE, known_task)

    try:
        run()
    except Unsatisfiable:
        # An operation without parameters or body has no invalid request to make.
        assert mode is GenerationMode.NEGATIVE, operation.label
    return ran


def test_every_operation_answers_as_its_schema_says(schema: Any, known_task: str) -> None:
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]

    cases_run = sum(
        run_cases(operation, mode, known_task)
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    )
    elapsed = time.monotonic() - started

    print(f"\nschemathesis: {cases_run} cases over {len(operations)} operations in {elapsed:.1f} s")
    assert cases_run >= len(operations) * 2
    assert elapsed < BUDGET_SECONDS
