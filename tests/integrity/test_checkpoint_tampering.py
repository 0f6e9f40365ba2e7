"""Tampering with checkpoints, or with what they vouch for, is found by `verify` and named.

Each attack is done as an attacker with database access would: straight in the
tables, with the append-only protection off (`tests.store.tampering`). `verify`
names exactly the checkpoint (or the task and version) affected, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from domain.chain import event_hash, hashed_entry
from domain.checkpoints import CheckpointSigned, checkpoint_stream_id, sign_document
from integrity.checkpoints import checkpoint_check
from integrity.signing import SigningKey
from integrity.verify import verify_store
from tests.conftest import BACKENDS
from tests.integrity.support import Trail, open_trail
from tests.store.tampering import tamper


@pytest.fixture(params=[b for b in BACKENDS if b != "memory"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh SQLite or PostgreSQL store: memory:// has no database to tamper with."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def trail(database_url: str) -> Iterator[Trail]:
    with open_trail(database_url) as opened:
        yield opened


def findings(trail: Trail, **scope: Any) -> list[tuple[str | None, int | None, int | None]]:
    """What verify names: (task id, version, checkpoint) of each problem."""
    check = checkpoint_check(trail.checkpoints, [trail.key.public], **scope)
    report = verify_store(trail.ledger, extra_checks=[check], **scope)
    return sorted(
        ((p.task_id and str(p.task_id), p.version, p.checkpoint) for p in report.problems),
        key=repr,
    )


def reasons(trail: Trail) -> list[str]:
    check = checkpoint_check(trail.checkpoints, [trail.key.public])
    return [p.reason for p in verify_store(trail.ledger, extra_checks=[check]).problems]


def three_checkpoints(trail: Trail) -> list[UUID]:
    """Two tasks of acme moving between three checkpoints; one task of globex."""
    first, second = trail.new_task(), trail.new_task()
    trail.new_task(org="globex")
    trail.checkpoint()
    trail.queue(first)
    trail.checkpoint()
    trail.queue(second)
    trail.start(second)
    trail.checkpoint()
    assert [c.seq for c in trail.checkpoints.all("acme")] == [1, 2, 3]
    return [first, second]


def test_an_untampered_store_verifies_with_no_findings(trail: Trail) -> None:
    three_checkpoints(trail)
    assert findings(trail) == []


def test_a_checkpoint_forged_without_the_key_is_named(trail: Trail, database_url: str) -> None:
    first, _ = three_checkpoints(trail)
    trail.start(first)
    # The forger has the database and the code, but not the key: it signs with its own.
    genuine = trail.key
    trail.key = SigningKey.generate()
    assert trail.checkpoint() == 1
    trail.key = genuine
    assert findings(trail) == [(None, None, 4)]
    assert [r for r in reasons(trail) if "unknown key" in r and r.startswith("forged: ")]


def test_a_checkpoint_replaced_by_one_signed_with_another_key_is_named(
    trail: Trail, database_url: str
) -> None:
    three_checkpoints(trail)
    genuine = next(c for c in trail.checkpoints.all("acme") if c.seq == 2)
    # Claims one task chain fewer, re-signed with the forger's own key.
    claimed = {k: v for k, v in genuine.document.items() if k not in ("key_id", "signature")}
    forged_document = sign_document({**claimed, "tasks": 1}, SigningKey.generate())
    forged = CheckpointSigned(  # type: ignore[call-arg]
        originator_id=genuine.originator_id,
        originator_version=2,
        timestamp=genuine.timestamp,
        changed=genuine.changed[:1],
        **forged_document,
    )
    state = trail.checkpoints.mapper.to_stored_event(forged).state
    replace_checkpoint_state(database_url, "acme", 2, state)
    assert findings(trail) == [(None, None, 2)]


def test_a_deleted_checkpoint_is_named(trail: Trail, database_url: str) -> None:
    three_checkpoints(trail)
    delete_checkpoint(database_url, "acme", 2)
    assert findings(trail) == [(None, None, 2)]
    assert any(reason.startswith("removed: checkpoint 2 of org acme") for reason in reasons(trail))


def test_cutting_off_a_tasks_checkpointed_events_names_the_task_and_version(
    trail: Trail, database_url: str
) -> None:
    first, second = three_checkpoints(trail)
    last = trail.version(second)
    assert last >= 3
    cut_off(database_url, second, after_version=1)
    assert findings(trail) == [(str(second), 2, None)]
    assert any(f"versions 2 to {last} are not stored" in reason for reason in reasons(trail))
    # A verification of one task names only that task's findings.
    assert findings(trail, task_id=first) == []
    assert findings(trail, task_id=second) == [(str(second), 2, None)]


def test_a_checkpointed_last_event_rewritten_with_its_hash_recomputed_is_named(
    trail: Trail, database_url: str
) -> None:
    _, second = three_checkpoints(trail)
    last = trail.version(second)
    # Nothing follows the last event to notice its new hash: only the checkpoint can.
    stored = trail.ledger.recorder.select_events(second, gt=last - 1, lte=last)[0]
    event = trail.ledger.mapper.to_domain_event(stored)
    object.__setattr__(event, "actor", {"id": "u-mallory", "name": "Mallory", "kind": "user"})
    object.__setattr__(event, "hash", event_hash(hashed_entry(event)))
    state = trail.ledger.mapper.to_stored_event(event).state
    with tamper(database_url) as conn:
        table, mark = stored_events_of(database_url, "taskledger_events")
        conn.execute(
            f"UPDATE {table} SET state = {mark} WHERE originator_id = {mark} "
            f"AND originator_version = {mark}",
            (state, stream_key(database_url, second), last),
        )
    assert findings(trail) == [(str(second), last, None)]
    assert any(r.startswith("edited: its hash is not the one checkpoint 3") for r in reasons(trail))


def test_swapped_checkpointed_events_are_named_once_by_the_chain_check(
    trail: Trail, database_url: str
) -> None:
    _, second = three_checkpoints(trail)
    last = trail.version(second)
    table, mark = stored_events_of(database_url, "taskledger_events")
    swap = (
        f"UPDATE {table} SET originator_version = {mark} WHERE originator_id = {mark} "
        f"AND originator_version = {mark}"
    )
    key = stream_key(database_url, second)
    with tamper(database_url) as conn:
        conn.execute(swap, (10_000, key, last))
        conn.execute(swap, (last, key, last - 1))
        conn.execute(swap, (last - 1, key, 10_000))
    assert findings(trail) == [(str(second), last - 1, None), (str(second), last, None)]
    assert all(r.startswith("reordered: ") for r in reasons(trail))


def test_events_cut_off_before_any_checkpoint_are_beyond_its_reach(
    trail: Trail, database_url: str
) -> None:
    first, second = three_checkpoints(trail)
    trail.start(first)  # not checkpointed yet
    cut_off(database_url, first, after_version=trail.version(first) - 1)
    # The checkpoints vouch for the version before: nothing they can name.
    assert findings(trail) == []
    assert findings(trail, task_id=second) == []


# ---------------------------------------------------------------- the attacks


def stored_events_of(url: str, postgres_table: str) -> tuple[str, str]:
    """The events table (SQLite: in the file `tamper` opened) and the value placeholder."""
    return ("stored_events", "?") if url.startswith("sqlite") else (postgres_table, "%s")


def stream_key(url: str, stream_id: UUID) -> Any:
    return stream_id.hex if url.startswith("sqlite") else stream_id


def delete_checkpoint(url: str, org: str, seq: int) -> None:
    stream = checkpoint_stream_id(org)
    with tamper(url, "checkpoints") as conn:
        if url.startswith("sqlite"):
            conn.execute(
                "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
                (stream.hex, seq),
            )
        else:
            conn.execute(
                "DELETE FROM checkpoints_events WHERE originator_id = %s "
                "AND originator_version = %s",
                (stream, seq),
            )


def replace_checkpoint_state(url: str, org: str, seq: int, state: bytes) -> None:
    stream = checkpoint_stream_id(org)
    with tamper(url, "checkpoints") as conn:
        if url.startswith("sqlite"):
            conn.execute(
                "UPDATE stored_events SET state = ? WHERE originator_id = ? "
                "AND originator_version = ?",
                (state, stream.hex, seq),
            )
        else:
            conn.execute(
                "UPDATE checkpoints_events SET state = %s WHERE originator_id = %s "
                "AND originator_version = %s",
                (state, stream, seq),
            )


def cut_off(url: str, task_id: UUID, *, after_version: int) -> None:
    with tamper(url) as conn:
        if url.startswith("sqlite"):
            conn.execute(
                "DELETE FROM stored_events WHERE originator_id = ? AND originator_version > ?",
                (task_id.hex, after_version),
            )
        else:
            conn.execute(
                "DELETE FROM taskledger_events WHERE originator_id = %s "
                "AND originator_version > %s",
                (task_id, after_version),
            )
