"""Tampering with stored task events is found by `verify` and named: that task, that version.

Each attack is made as an attacker with database access would make it: straight in
the event table, with the append-only protection off (`tests.store.tampering`).
Every test checks that nothing else is named: an edit to one event must not make
its successor, or another task, look wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from domain.application import TaskLedger
from domain.chain import event_hash, hashed_entry
from integrity.verify import VerifyReport, verify_store
from store.config import StoreConfig
from tests.application.support import create_executable, job, report, run_step
from tests.conftest import BACKENDS
from tests.store.tampering import tamper

EVENTS = "taskledger_events"  # PostgreSQL; SQLite's table is the library's `stored_events`


@pytest.fixture(params=[b for b in BACKENDS if b != "memory"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh SQLite or PostgreSQL store: memory:// has no database to tamper with."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasktrail.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@dataclass
class Store:
    url: str
    ledger: TaskLedger
    victim: UUID  # the task the tests tamper with (acme)
    bystander: UUID  # another task of acme, left alone
    foreign: UUID  # a task of globex

    def verify(self, **scope: Any) -> VerifyReport:
        return verify_store(self.ledger, **scope)

    def findings(self, **scope: Any) -> list[tuple[str | None, int | None, str]]:
        """(task id, version, kind) of each problem verify names."""
        return [
            (p.task_id, p.version, p.reason.split(":")[0]) for p in self.verify(**scope).problems
        ]

    def sql(self, text: str, *params: Any) -> list[Any]:
        """Runs `text` (with %s placeholders) on the raw table, protection off."""
        store = StoreConfig.from_url(self.url)
        table = EVENTS if store.backend == "postgres" else "stored_events"
        text = text.replace("{events}", table)
        if store.backend == "sqlite":
            text = text.replace("%s", "?")
            params = tuple(p.hex if isinstance(p, UUID) else p for p in params)
        with tamper(self.url) as conn:
            cursor = conn.execute(text, params)
            return list(cursor.fetchall()) if cursor.description else []

    def state(self, task_id: UUID, version: int) -> bytes:
        rows = self.sql(
            "SELECT state FROM {events} WHERE originator_id = %s AND originator_version = %s",
            task_id,
            version,
        )
        return bytes(rows[0][0])

    def set_state(self, task_id: UUID, version: int, state: bytes) -> None:
        self.sql(
            "UPDATE {events} SET state = %s WHERE originator_id = %s AND originator_version = %s",
            state,
            task_id,
            version,
        )

    def set_version(self, task_id: UUID, version: int, new_version: int) -> None:
        self.sql(
            "UPDATE {events} SET originator_version = %s "
            "WHERE originator_id = %s AND originator_version = %s",
            new_version,
            task_id,
            version,
        )


def a_task_with_history(ledger: TaskLedger, org: str = "acme") -> UUID:
    """A task of 7 events: created, queued, a job and two steps run, finished."""
    task_id = create_executable(ledger, job("build", "clone", "compile"), org=org)
    report(ledger, task_id, *run_step("build", "clone"), *run_step("build", "compile"))
    return task_id


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    ledger = TaskLedger(StoreConfig.from_url(database_url).env("tasks"))
    try:
        victim, bystander = a_task_with_history(ledger), a_task_with_history(ledger)
        foreign = a_task_with_history(ledger, org="globex")
        assert ledger.get_task(victim)["version"] >= 6
        yield Store(database_url, ledger, victim, bystander, foreign)
    finally:
        ledger.close()


def test_an_untampered_store_verifies_with_no_findings(store: Store) -> None:
    report = store.verify()

    assert report.ok and report.problems == []
    assert report.tasks_checked == 3
    assert report.events_checked == 3 * store.ledger.get_task(store.victim)["version"]


def test_one_byte_changed_names_that_event_only(store: Store) -> None:
    state = store.state(store.victim, 3)
    assert b'"build"' in state
    store.set_state(store.victim, 3, state.replace(b'"build"', b'"bUild"', 1))

    assert store.findings() == [(str(store.victim), 3, "edited")]
    assert store.findings(org="acme", task_id=store.victim) == [(str(store.victim), 3, "edited")]
    assert store.findings(org="acme", task_id=store.bystander) == []


def test_an_edit_with_its_hash_recomputed_is_named_by_its_successor(store: Store) -> None:
    # The attacker knows the recipe: the edited event gets a hash that matches it.
    (event,) = store.ledger.events.get(store.victim, gt=2, lte=3)
    forged = store.ledger.mapper.to_stored_event(_rehashed(event, job="bUild"))
    store.set_state(store.victim, 3, forged.state)

    assert store.findings() == [(str(store.victim), 3, "edited")]


def test_a_deleted_event_is_named_removed(store: Store) -> None:
    store.sql(
        "DELETE FROM {events} WHERE originator_id = %s AND originator_version = %s",
        store.victim,
        4,
    )

    assert store.findings() == [(str(store.victim), 4, "removed")]


def test_two_swapped_events_are_named_reordered(store: Store) -> None:
    # Through a free version: (originator_id, originator_version) is the primary key.
    store.set_version(store.victim, 3, 1000)
    store.set_version(store.victim, 4, 3)
    store.set_version(store.victim, 1000, 4)

    assert store.findings() == [
        (str(store.victim), 3, "reordered"),
        (str(store.victim), 4, "reordered"),
    ]


def test_an_undecodable_row_is_named_and_the_rest_still_checked(store: Store) -> None:
    store.set_state(store.victim, 3, b"{not json")
    store.set_state(
        store.bystander, 7, store.state(store.bystander, 7).replace(b'"done"', b'"dona"', 1)
    )

    assert store.findings() == sorted(
        [(str(store.victim), 3, "undecodable"), (str(store.bystander), 7, "edited")]
    )


def test_an_org_sees_only_its_own_tasks_problems(store: Store) -> None:
    store.set_state(store.foreign, 2, b"{not json")

    assert store.findings(org="acme") == []
    assert store.verify(org="acme").tasks_checked == 2
    assert store.findings(org="globex") == [(str(store.foreign), 2, "undecodable")]
    assert store.verify(org="acme", task_id=store.foreign).tasks_checked == 0


def _rehashed(event: Any, **data: Any) -> Any:
    """A copy of `event` with `data` changed and a hash recomputed to match (a forgery)."""
    forged = object.__new__(type(event))
    object.__setattr__(forged, "__dict__", {**vars(event), **data})
    object.__setattr__(forged, "hash", event_hash(hashed_entry(forged)))
    return forged
