"""Per-token rate limits: 429 with Retry-After past the rate, and token guessing slowed."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from api.rate_limit import MAX_BUCKETS, Buckets, Rate
from api.settings import Settings
from tests.api.conftest import Api, assert_problem


@pytest.fixture
def store_url() -> str:
    """The limiter sits in front of the store and never touches it: one store will do."""
    return "memory://"


# Slow enough that a loaded machine (a request can take half a second) never sees a
# unit come back in the middle of a burst.
PER_SECOND = 0.5
BURST = 3


@pytest.fixture
def limited(make_api: Callable[..., Api]) -> Api:
    return make_api(rate_limit_per_second=PER_SECOND, rate_limit_burst=BURST)


def keys(api: Api, who: str) -> int:
    return api.call("GET", "/v1/api-keys", who).status_code


def test_a_token_past_its_burst_gets_429_with_retry_after(limited: Api) -> None:
    assert [keys(limited, "admin") for _ in range(BURST)] == [200] * BURST

    refused = limited.call("GET", "/v1/api-keys", "admin")

    body = assert_problem(refused, 429)
    assert refused.headers["retry-after"] in ("1", "2")  # a unit comes back every 2 s
    assert "rate" in body["detail"]


def test_a_refused_write_is_not_stored(limited: Api) -> None:
    for _ in range(BURST):
        keys(limited, "writer")
    before = limited.store_position()

    refused = limited.call("POST", "/v1/tasks", "writer", json={"not": "even valid"})

    assert_problem(refused, 429)
    assert limited.store_position() == before


def test_another_token_is_unaffected(limited: Api) -> None:
    while keys(limited, "admin") != 429:
        pass

    assert keys(limited, "intruder_admin") == 200
    assert limited.call("GET", "/v1/api-keys", "platform").status_code == 200


def test_a_token_recovers_once_its_bucket_refills(limited: Api) -> None:
    while keys(limited, "admin") != 429:
        pass

    time.sleep(1.2 / PER_SECOND)  # one unit back, and a little for a slow machine

    assert keys(limited, "admin") == 200
    assert keys(limited, "admin") == 429


def test_health_readiness_and_metrics_are_never_limited(limited: Api) -> None:
    for path in ("/healthz", "/readyz", "/metrics") * (BURST + 2):
        assert limited.client.get(path).status_code == 200, path


def test_zero_turns_the_limit_off(make_api: Callable[..., Api]) -> None:
    api = make_api(rate_limit_per_second=0, rate_limit_burst=1)

    assert {keys(api, "admin") for _ in range(20)} == {200}


def test_failed_authentications_slow_guessing_from_that_address(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(rate_limit_auth_failures_per_second=0.1, rate_limit_auth_failures_burst=4)
    assert keys(api, "admin") == 200  # a token seen to work keeps its own bucket
    guesses = [
        api.client.get("/v1/api-keys", headers={"Authorization": f"Bearer tt_guess{n}"})
        for n in range(6)
    ]

    assert [g.status_code for g in guesses] == [401] * 4 + [429] * 2
    assert 1 <= int(guesses[-1].headers["retry-after"]) <= 10  # a unit back every 10 s
    assert_problem(guesses[-1], 429)
    assert api.client.get("/v1/api-keys").status_code == 429  # no token: same address
    assert keys(api, "admin") == 200


def test_a_revoked_token_loses_its_bucket(make_api: Callable[..., Api]) -> None:
    api = make_api(rate_limit_auth_failures_per_second=0.1, rate_limit_auth_failures_burst=2)
    key = api.call(
        "POST", "/v1/api-keys", "admin", json={"org": "acme", "role": "reader", "name": "x"}
    )
    token = key.json()["token"]
    as_key = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/v1/events", headers=as_key).status_code != 401
    api.call("DELETE", f"/v1/api-keys/{key.json()['id']}", "admin")

    answers = [api.client.get("/v1/events", headers=as_key).status_code for _ in range(3)]

    assert answers == [401, 401, 429]


def test_the_default_admits_a_1000_per_second_benchmark_from_one_token() -> None:
    fields = Settings.model_fields  # the defaults, whatever this machine's environment says
    rate = Rate(fields["rate_limit_per_second"].default, fields["rate_limit_burst"].default)
    now = [0.0]
    buckets = Buckets(rate, clock=lambda: now[0])

    refused = 0
    for _ in range(10_000):  # ten seconds at 1,000 a second
        now[0] += 0.001
        refused += buckets.take(b"token") > 0

    assert refused == 0
    assert rate.burst >= 2 * rate.per_second >= 2000


def test_a_flood_of_distinct_tokens_cannot_grow_memory_without_bound() -> None:
    now = [0.0]
    buckets = Buckets(Rate(per_second=10, burst=20), clock=lambda: now[0])
    for n in range(MAX_BUCKETS - 1):
        buckets.take(n.to_bytes(4, "big"))
    now[0] = 0.2  # the flood's buckets are full again: the same as no bucket
    while buckets.take(b"busy") == 0:
        pass

    for n in range(MAX_BUCKETS, MAX_BUCKETS + 1000):
        buckets.take(n.to_bytes(4, "big"))
        assert len(buckets.levels) <= MAX_BUCKETS

    assert len(buckets.levels) <= 1001
    assert buckets.take(b"busy") > 0  # a throttled token stays throttled
