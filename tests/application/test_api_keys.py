"""API keys: issued with a token shown once, found by that token, revoked for good."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.api_key import hash_token
from domain.application import TaskLedger
from domain.application_errors import ApiKeyNotFoundError
from domain.context import acting_as, command_scope
from domain.errors import ConflictError
from store.config import StoreConfig

from .support import ALICE


def test_issued_key_is_found_by_its_token_until_revoked(ledger: TaskLedger) -> None:
    with acting_as(ALICE):
        key, token, position = ledger.issue_key(org="acme", role="writer", name="ci")
    assert token is not None and token.startswith("tt_")
    assert position == ledger.recorder.max_notification_id()
    assert (key["org"], key["role"], key["name"], key["revoked_at"]) == (
        "acme",
        "writer",
        "ci",
        None,
    )
    assert ledger.find_key(token) == key
    assert ledger.get_key(key["id"], org="acme") == key

    with acting_as(ALICE):
        ledger.revoke_key(key["id"], org="acme")

    assert ledger.find_key(token) is None
    revoked = ledger.get_key(key["id"])
    assert revoked["revoked_at"] is not None
    events: list[Any] = list(ledger.events.get(key["id"]))
    assert [type(e).__name__ for e in events] == ["ApiKeyIssued", "ApiKeyRevoked"]
    assert all(e.actor == ALICE for e in events)
    # Revoking twice is a conflict, and records nothing.
    with pytest.raises(ConflictError, match="already revoked"):
        ledger.revoke_key(key["id"])
    assert len(list(ledger.events.get(key["id"]))) == 2


def test_token_is_never_stored(ledger: TaskLedger) -> None:
    key, token, _ = ledger.issue_key(org="acme", role="admin", name="ops")
    assert token is not None
    ledger.revoke_key(key["id"])

    stored = ledger.recorder.select_events(key["id"])
    assert len(stored) == 2
    for record in stored:
        state = record.state.decode("utf-8")
        assert token not in state
        assert token[len("tt_") :] not in state
    # Only its hash is kept, and only that finds the key.
    assert hash_token(token) in stored[0].state.decode("utf-8")
    assert ledger.find_key(hash_token(token)) is None


def test_unknown_token_or_key_is_not_found(ledger: TaskLedger) -> None:
    assert ledger.find_key("tt_not-a-token") is None
    assert ledger.find_key("") is None
    with pytest.raises(ApiKeyNotFoundError):
        ledger.get_key(uuid4())
    with pytest.raises(ApiKeyNotFoundError):
        ledger.revoke_key(uuid4())


def test_key_of_another_org_cannot_be_read_or_revoked(ledger: TaskLedger) -> None:
    key, token, _ = ledger.issue_key(org="acme", role="reader", name="dashboards")
    assert token is not None
    with pytest.raises(ApiKeyNotFoundError):
        ledger.get_key(key["id"], org="globex")
    with pytest.raises(ApiKeyNotFoundError):
        ledger.revoke_key(key["id"], org="globex")
    assert ledger.find_key(token) == key


def test_keys_are_listed_per_org(ledger: TaskLedger) -> None:
    acme, _, _ = ledger.issue_key(org="acme", role="reader", name="one")
    globex, _, _ = ledger.issue_key(org="globex", role="reader", name="two")
    ledger.revoke_key(acme["id"])
    assert [k["id"] for k in ledger.list_keys(org="acme")] == [acme["id"]]
    assert [k["id"] for k in ledger.list_keys()] == [acme["id"], globex["id"]]


def test_unknown_role_is_refused(ledger: TaskLedger) -> None:
    with pytest.raises(ValueError, match="role"):
        ledger.issue_key(org="acme", role="owner", name="x")


def test_revoke_racing_another_revoke_is_a_conflict_and_stores_one_revocation(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _, _ = ledger.issue_key(org="acme", role="writer", name="ci")
    save = ledger.save
    raced = [False]

    def save_after_a_concurrent_revoke(*aggregates: Any, **kwargs: Any) -> Any:
        if not raced[0]:
            # Another process revokes the key between this command's load and save.
            raced[0] = True
            with command_scope():  # a command of its own, elsewhere
                other: Any = ledger.repository.get(key["id"], version=1)
                other.revoke(datetime.now(UTC))
                save(other)
        return save(*aggregates, **kwargs)

    monkeypatch.setattr(ledger, "save", save_after_a_concurrent_revoke)

    with pytest.raises(ConflictError, match="already revoked"):
        ledger.revoke_key(key["id"])
    assert [type(e).__name__ for e in ledger.events.get(key["id"])] == [
        "ApiKeyIssued",
        "ApiKeyRevoked",
    ]


def streams_read_by(ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    """Probes the ledger's store: the streams read from now on (it still answers them).

    Reading the notification log, the only way to scan every key, fails outright.
    """
    recorder: Any = ledger.recorder
    select_events = recorder.select_events
    streams: list[UUID] = []

    def scan(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the token lookup scanned the notification log")

    def read_one_stream(originator_id: UUID, **kwargs: Any) -> Any:
        streams.append(originator_id)
        return select_events(originator_id, **kwargs)

    monkeypatch.setattr(recorder, "select_notifications", scan)
    monkeypatch.setattr(recorder, "select_events", read_one_stream)
    return streams


def test_token_is_looked_up_by_its_hash_reading_one_stream(
    ledger: TaskLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = [ledger.issue_key(org="acme", role="reader", name=f"key-{n}") for n in range(5)]
    key, token, _ = issued[2]
    assert token is not None

    streams = streams_read_by(ledger, monkeypatch)
    assert ledger.find_key(token) == key
    assert ledger.find_key("tt_not-a-token") is None

    # The known key's stream, then the stream an unknown token would have: no scan.
    assert streams[0] == key["id"]
    assert len(set(streams)) == 2 and key["id"] in streams


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A store two ledgers (two server processes) can share."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def two_ledgers(shared_store_url: str) -> Iterator[tuple[TaskLedger, TaskLedger]]:
    first = TaskLedger(StoreConfig.from_url(shared_store_url).env())
    second = TaskLedger(StoreConfig.from_url(shared_store_url).env())
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def test_key_issued_or_revoked_elsewhere_is_looked_up_reading_one_stream(
    two_ledgers: tuple[TaskLedger, TaskLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer, server = two_ledgers
    for n in range(3):
        issuer.issue_key(org="globex", role="reader", name=f"other-{n}")
    key, token, _ = issuer.issue_key(org="acme", role="writer", name="ci")
    assert token is not None
    streams = streams_read_by(server, monkeypatch)

    # A server that never saw the key finds it by its token, in the key's stream alone.
    assert server.find_key(token) == key
    # Revoked by the other server: the next lookup reads the same stream again.
    issuer.revoke_key(key["id"])
    assert server.find_key(token) is None

    assert streams and set(streams) == {key["id"]}
