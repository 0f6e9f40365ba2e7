"""`tasktrail projections status` and `rebuild`, run as the operator runs them."""

from __future__ import annotations

import pytest

from api.cli import main
from tests.projections.conftest import open_world
from tests.projections.history import History, create


@pytest.fixture
def store(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
    monkeypatch.setenv("TASKTRAIL_DATABASE_URL", url)
    return url


def test_status_shows_each_projections_position_and_lag(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_world(store) as world:
        history = History()
        for _ in range(3):
            create(world.ledger, history)
        world.sync()
        create(world.ledger, history)
    assert main(["projections", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["projection", "position", "head", "lag", "runner"]
    assert lines[1].split() == ["task_list", "3", "4", "1", "none"]
    assert lines[2].split() == ["event_feed", "3", "4", "1", "none"]


def test_rebuild_replays_from_zero_with_progress_and_a_rate(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_world(store) as world:
        history = History()
        for _ in range(5):
            create(world.ledger, history)
        world.sync()
        before = world.projections.task_list.dump()
    assert main(["projections", "rebuild", "task_list"]) == 0
    captured = capsys.readouterr()
    assert "task_list: rebuilt from 5 events up to position 5" in captured.out
    assert "events/s" in captured.out
    assert "100.0%" in captured.err and "[#" in captured.err
    with open_world(store) as world:
        assert world.projections.task_list.dump() == before
