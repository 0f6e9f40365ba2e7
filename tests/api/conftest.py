"""HTTP fixtures: the app over each store, driven through httpx (Starlette's TestClient)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import Services
from api.settings import Settings

ADMIN_TOKEN = "tt_admin_test-token"


@dataclass
class Api:
    """A client plus bearer tokens for each role of org `acme` and of an intruder org."""

    client: TestClient
    tokens: dict[str, str]

    def headers(self, who: str = "writer", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    def call(self, method: str, path: str, who: str = "writer", **kwargs: Any) -> Any:
        headers = {**self.headers(who), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def create_task(self, who: str = "writer", **fields: Any) -> dict[str, Any]:
        body = {**deploy_task(), **fields}
        response = self.call("POST", "/v1/tasks", who, json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def report(self, task_id: str, *transitions: dict[str, Any], who: str = "writer") -> Any:
        return self.call(
            "POST", f"/v1/tasks/{task_id}/transitions", who, json={"transitions": list(transitions)}
        )


def deploy_task() -> dict[str, Any]:
    return {
        "type": "app.deploy",
        "title": "Deploy shop to production",
        "kind": "executable",
        "author": {"id": "u-42", "name": "Alice", "kind": "user"},
        "project": "shop",
        "labels": {"app": "shop", "env": "prod"},
        "jobs": [
            {
                "key": "build",
                "name": "Build image",
                "steps": [{"key": "clone", "name": "Clone"}, {"key": "compile", "name": "Compile"}],
            },
            {
                "key": "deploy",
                "name": "Deploy",
                "needs": ["build"],
                "steps": [{"key": "rollout", "name": "Roll out"}],
            },
            {
                "key": "sync",
                "name": "Sync registry",
                "system": True,
                "steps": [{"key": "push", "name": "Push", "system": True}],
            },
        ],
    }


@pytest.fixture
def make_api(store_url: str, tmp_path) -> Iterator[Callable[..., Api]]:  # type: ignore[no-untyped-def]
    clients: list[TestClient] = []

    def make(**settings: Any) -> Api:
        config = Settings(
            database_url=store_url, admin_token=ADMIN_TOKEN, var_dir=tmp_path / "var", **settings
        )
        client = TestClient(create_app(config), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        tokens = {"admin": ADMIN_TOKEN}
        for org, roles in (("acme", ("reader", "writer", "auditor", "admin")), ("evil", ("writer", "admin"))):
            for role in roles:
                response = client.post(
                    "/v1/api-keys",
                    json={"org": org, "role": role, "name": f"{org}-{role}"},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                )
                assert response.status_code == 201, response.text
                name = role if org == "acme" else f"intruder_{role}"
                tokens[name] = response.json()["token"]
        return Api(client, tokens)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
