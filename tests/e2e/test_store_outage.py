"""PostgreSQL goes away under a running server, and comes back.

A real uvicorn server (in a thread, on a real socket) reaches PostgreSQL through a
TCP proxy the test cuts: writes then answer 503 with a problem document and
`Retry-After` within a few seconds (never a hang, never a stack trace), `/readyz`
answers 503; once the proxy is back on the same port, writes succeed and `/readyz`
is 200 again, without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from api.settings import Settings
from store.config import StoreConfig
from tests.api.conftest import ADMIN_TOKEN, PROBLEM, LiveServer, deploy_task, start_server
from tests.application.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

# The most a request may take while the store is gone (the URL's connect_timeout is 1 s;
# measured ~2 s: the failed save, then the check for its own events). Generous, for a
# machine busy with other tests: what it rules out is a hang.
PATIENCE = 8.0


def through(proxy: TcpProxy, pg_url: str) -> str:
    """`pg_url`, reached through `proxy`, giving up on a connection after one second."""
    store = StoreConfig.from_url(pg_url)
    password = f":{quote(store.pg_password)}" if store.pg_password else ""
    return (
        f"postgresql://{quote(store.pg_user)}{password}@127.0.0.1:{proxy.port}/"
        f"{store.pg_dbname}?schema={store.pg_schema}&connect_timeout=1"
    )


@pytest.fixture
def proxied(pg_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, list[TcpProxy]]]:
    store = StoreConfig.from_url(pg_url)
    proxies = [TcpProxy(store.pg_host, store.pg_port)]
    settings = Settings(
        database_url=through(proxies[0], pg_url),
        admin_token=ADMIN_TOKEN,
        var_dir=tmp_path / "var",
        run_projections=True,
    )
    live = start_server(settings)
    try:
        yield live, proxies
    finally:
        live.server.should_exit = True
        live.thread.join(timeout=20)
        proxies[-1].cut()


def timed(client: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
    started = time.monotonic()
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert elapsed < PATIENCE, f"{method} {path} took {elapsed:.1f} s"
    return response


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM, response.headers
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["status"] == 503 and body["title"], body
    assert "Traceback" not in response.text and 'File "' not in response.text


def wait_until(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_writes_answer_503_while_the_store_is_gone_and_recover_without_a_restart(
    proxied: tuple[LiveServer, list[TcpProxy]],
) -> None:
    live, proxies = proxied
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    task = {**deploy_task(), "org": "acme"}
    with httpx.Client(base_url=live.url, headers=auth, timeout=30) as client:
        assert timed(client, "POST", "/v1/tasks", json=task).status_code == 201
        assert timed(client, "GET", "/readyz").status_code == 200

        proxies[0].cut()
        for _ in range(3):  # the pool's dead connections, then no connection at all
            assert_unavailable(timed(client, "POST", "/v1/tasks", json=task))
        assert_unavailable(timed(client, "GET", "/readyz"))
        metrics = timed(client, "GET", "/metrics")
        assert metrics.status_code == 200 and "tasktrail_store_up 0.0" in metrics.text

        port = proxies[0].port
        proxies.append(TcpProxy(*proxies[0].target, port=port))  # the store is back
        wait_until(lambda: timed(client, "GET", "/readyz").status_code == 200)
        created = timed(client, "POST", "/v1/tasks", json=task)
        if created.status_code == 503:  # a pooled connection from before the cut; retry once
            assert_unavailable(created)
            created = timed(client, "POST", "/v1/tasks", json=task)
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        assert timed(client, "GET", f"/v1/tasks/{task_id}").json()["status"] == "pending"
        # The projection runners are back at work too: the new task is listed.
        wait_until(
            lambda: any(
                t["id"] == task_id
                for t in timed(client, "GET", "/v1/tasks", params={"org": "acme"}).json()["items"]
            )
        )
