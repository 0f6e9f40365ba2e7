"""The platform administrator's token: generated once into var/admin-token (mode 0600),
printed once, reused after; `TASKTRAIL_ADMIN_TOKEN` wins and writes nothing."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import cli
from api.admin_token import ensure_admin_token, read_admin_token, token_path
from api.app import create_app
from api.settings import Settings


@pytest.fixture(autouse=True)
def no_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKTRAIL_ADMIN_TOKEN", raising=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(admin_token=None, var_dir=tmp_path / "var", database_url="memory://")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that hides nothing: the file's mode must come from the code alone."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_token_is_generated_once_into_a_file_only_its_owner_reads(
    settings: Settings, open_umask: None
) -> None:
    token, generated = ensure_admin_token(settings)

    path = token_path(settings)
    assert generated and token.startswith("tt_admin_") and len(token) > 40
    assert path == settings.var_dir / "admin-token"
    assert path.read_text().strip() == token
    assert mode_of(path) == 0o600
    # Only the token file is left behind: no draft of it.
    assert [p.name for p in settings.var_dir.iterdir()] == ["admin-token"]

    # The next start reuses it, and does not count it as new (so does not print it).
    assert ensure_admin_token(settings) == (token, False)
    assert read_admin_token(settings) == token
    assert mode_of(path) == 0o600


def test_the_environment_token_wins_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKTRAIL_ADMIN_TOKEN", "tt_admin_from-env")
    settings = Settings(var_dir=tmp_path / "var")

    assert ensure_admin_token(settings) == ("tt_admin_from-env", False)
    assert read_admin_token(settings) == "tt_admin_from-env"
    assert not token_path(settings).exists()

    # Even over a token kept in the file earlier.
    settings.var_dir.mkdir()
    token_path(settings).write_text("tt_admin_from-file\n")
    assert ensure_admin_token(settings) == ("tt_admin_from-env", False)
    assert token_path(settings).read_text() == "tt_admin_from-file\n"


@pytest.mark.parametrize("blank", ["", "\n", "  \n\t\n"], ids=["empty", "newline", "spaces"])
def test_an_empty_token_file_gets_a_new_token(
    settings: Settings, open_umask: None, blank: str
) -> None:
    path = token_path(settings)
    settings.var_dir.mkdir()
    path.write_text(blank)
    path.chmod(0o644)
    assert read_admin_token(settings) is None  # never the empty string: no one gets in with ""

    token, generated = ensure_admin_token(settings)

    assert generated and token.startswith("tt_admin_")
    assert path.read_text().strip() == token
    assert mode_of(path) == 0o600
    assert ensure_admin_token(settings) == (token, False)


def test_a_token_file_others_may_read_is_made_private_with_a_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    path = token_path(settings)
    settings.var_dir.mkdir()
    path.write_text("tt_admin_kept\n")
    path.chmod(0o644)

    with caplog.at_level(logging.WARNING, logger="tasktrail.admin_token"):
        assert ensure_admin_token(settings) == ("tt_admin_kept", False)

    assert mode_of(path) == 0o600
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "0o644" in warning.getMessage()
    # Once private, nothing more is said.
    caplog.clear()
    assert ensure_admin_token(settings) == ("tt_admin_kept", False)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_starts_at_the_same_moment_agree_on_one_token(settings: Settings) -> None:
    starts = 8
    barrier = threading.Barrier(starts)
    results: list[tuple[str, bool]] = []

    def start() -> None:
        barrier.wait(timeout=10)
        results.append(ensure_admin_token(settings))

    threads = [threading.Thread(target=start) for _ in range(starts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert len(results) == starts
    assert len({token for token, _ in results}) == 1
    assert [generated for _, generated in results].count(True) == 1
    assert read_admin_token(settings) == results[0][0]


def serve(monkeypatch: pytest.MonkeyPatch, var_dir: Path) -> None:
    """`tasktrail serve` up to starting uvicorn (which is not started)."""
    monkeypatch.setenv("TASKTRAIL_DATABASE_URL", "memory://")
    monkeypatch.setenv("TASKTRAIL_VAR_DIR", str(var_dir))
    ran: list[dict[str, Any]] = []
    monkeypatch.setattr(cli.uvicorn, "run", lambda *args, **kwargs: ran.append(kwargs))
    assert cli.main(["serve"]) == 0
    assert len(ran) == 1


def test_serve_prints_a_generated_token_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    var_dir = tmp_path / "var"

    serve(monkeypatch, var_dir)
    first = capsys.readouterr().out
    token = (var_dir / "admin-token").read_text().strip()
    assert token in first

    serve(monkeypatch, var_dir)
    assert token not in capsys.readouterr().out


def test_serve_starts_over_an_empty_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    (var_dir / "admin-token").write_text("")

    serve(monkeypatch, var_dir)

    token = (var_dir / "admin-token").read_text().strip()
    assert token and token in capsys.readouterr().out


def test_the_generated_token_is_the_services_admin(settings: Settings) -> None:
    token, _ = ensure_admin_token(settings)

    with TestClient(create_app(settings)) as client:
        keys = client.get("/v1/api-keys", headers={"Authorization": f"Bearer {token}"})
        wrong = client.get("/v1/api-keys", headers={"Authorization": f"Bearer {token}x"})

    assert keys.status_code == 200, keys.text
    assert wrong.status_code == 401
