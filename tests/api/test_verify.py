"""Hash chains over HTTP: entries recompute from their JSON alone; `GET /v1/verify`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from store.config import StoreConfig
from tests.api.conftest import DONE_RUN, Api, assert_problem
from tests.store.tampering import tamper

GENESIS = "0" * 64


def recomputed_hash(entry: dict[str, Any]) -> str:
    """The README's recipe, as an outsider writes it: nothing of tasktrail's code."""
    keys = ("task_id", "version", "type", "recorded_at", "actor", "data", "prev_hash")
    hashed = {key: entry[key] for key in keys}
    text = json.dumps(hashed, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def assert_chained(entries: list[dict[str, Any]]) -> None:
    """Each entry recomputes to its hash, and chains to the one before it in its task."""
    heads: dict[str, str] = {}
    for entry in entries:
        assert recomputed_hash(entry) == entry["hash"], entry
        assert entry["prev_hash"] == heads.get(entry["task_id"], GENESIS), entry
        heads[entry["task_id"]] = entry["hash"]


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """With the projection runners: the export reads the event index."""
    return make_api(run_projections=True)


def test_timeline_and_export_entries_recompute_from_their_json_alone(api: Api) -> None:
    task = api.create_task(title="Déployer la boutique ✓")  # non-ASCII: hashed as UTF-8
    api.finish(task["id"])

    timeline = api.timeline(task["id"], "auditor", include_system="true")
    assert [e["version"] for e in timeline] == list(range(1, len(timeline) + 1))
    assert_chained(timeline)

    at = api.get_task(task["id"])["position"]
    export = api.call("GET", f"/v1/export?min_position={at}", "auditor")
    assert export.status_code == 200, export.text
    lines = [json.loads(line) for line in export.text.splitlines()]
    task_entries = [e for e in lines if e.get("task_id")]
    assert_chained(task_entries)
    # The export holds the very entries of the timeline (plus their positions).
    assert [e["hash"] for e in task_entries] == [e["hash"] for e in timeline]


def test_redacted_entries_say_so_and_the_rest_still_recompute(api: Api) -> None:
    task = api.create_task()  # its plan has a system job, `sync`
    api.finish(task["id"])

    shown = api.timeline(task["id"], "reader")

    created = shown[0]
    assert created["type"] == "TaskCreated" and created["redacted"] is True
    assert recomputed_hash(created) != created["hash"]
    for entry in shown[1:]:
        assert entry["redacted"] is False
        assert recomputed_hash(entry) == entry["hash"]
    # The auditor's copy of the same event does recompute.
    assert api.timeline(task["id"], "auditor", include_system="true")[0]["hash"] == created["hash"]


def test_verify_answers_auditors_and_admins_of_the_org(api: Api) -> None:
    task = api.create_task()
    api.finish(task["id"])
    api.create_task("intruder_writer")

    for who in ("auditor", "admin"):
        response = api.call("GET", "/v1/verify", who)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "ok": True,
            "tasks_checked": 1,
            "events_checked": api.version(task["id"]),
            "problems": [],
        }
    for who in ("reader", "writer"):
        assert_problem(api.call("GET", "/v1/verify", who), 403)
    # The platform token names the org, as for the feed.
    assert_problem(api.call("GET", "/v1/verify", "platform"), 422)
    assert api.call("GET", "/v1/verify?org=evil", "platform").json()["tasks_checked"] == 1
    one = api.call("GET", f"/v1/verify?task_id={task['id']}", "auditor").json()
    assert one["ok"] and one["tasks_checked"] == 1


def test_verify_of_another_orgs_task_is_404(api: Api) -> None:
    theirs = api.create_task("intruder_writer")

    assert_problem(api.call("GET", f"/v1/verify?task_id={theirs['id']}", "auditor"), 404)
    assert_problem(
        api.call("GET", "/v1/verify?task_id=00000000-0000-4000-8000-000000000000", "admin"), 404
    )


def test_verify_names_the_event_edited_in_the_database(api: Api, store_url: str) -> None:
    task = api.create_task()
    api.reported(task["id"], *DONE_RUN[:3])
    store = StoreConfig.from_url(store_url)
    if store.backend == "memory":
        pytest.skip("memory:// has no database to tamper with")
    with tamper(store_url) as conn:
        table, mark = (
            ("taskledger_events", "%s") if store.backend == "postgres" else ("stored_events", "?")
        )
        task_id = task["id"] if store.backend == "postgres" else task["id"].replace("-", "")
        where = f"WHERE originator_id = {mark} AND originator_version = 1"
        (state,) = conn.execute(f"SELECT state FROM {table} {where}", (task_id,)).fetchone()
        forged = bytes(state).replace(b"Deploy shop", b"Deploy shoP", 1)
        conn.execute(f"UPDATE {table} SET state = {mark} {where}", (forged, task_id))

    response = api.call("GET", f"/v1/verify?task_id={task['id']}", "auditor")

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["ok"] is False
    assert [
        (p["task_id"], p["version"], p["reason"].split(":")[0]) for p in answer["problems"]
    ] == [(task["id"], 1, "edited")]
