"""Signed checkpoints over HTTP: the signing keys, the latest checkpoint, the export's own."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from api import cli
from domain.checkpoints import signed_bytes
from integrity.bundle import verify_bundle, verify_lines
from integrity.signing import PublicKey, SigningKey
from tests.api.conftest import Api, assert_problem
from tests.store.tampering import tamper

CHECKPOINT_FIELDS = {
    "org", "seq", "position", "tasks", "root", "previous", "signed_at", "key_id", "signature",
}  # fmt: skip


@pytest.fixture
def projected(make_api: Callable[..., Api]) -> Api:
    """The app with its projection runners (the export reads the event index)."""
    return make_api(run_projections=True)


def latest_after(
    api: Api, position: int, who: str = "reader", timeout: float = 20
) -> dict[str, Any]:
    """The latest checkpoint, once the background writer has signed one covering `position`."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.call("GET", "/v1/checkpoints/latest", who)
        if response.status_code == 200 and response.json()["position"] >= position:
            return dict(response.json())
        assert time.monotonic() < deadline, f"no checkpoint covers position {position}"
        time.sleep(0.05)


def test_any_role_reads_the_signing_keys(api: Api) -> None:
    for who in ("reader", "writer", "auditor", "admin", "platform", "intruder_writer"):
        response = api.call("GET", "/v1/signing-keys", who)
        assert response.status_code == 200, response.text
        (key,) = response.json()["keys"]
        assert key["algorithm"] == "Ed25519"
        assert PublicKey.from_base64(key["public_key"]).key_id == key["key_id"]
    assert_problem(api.call("GET", "/v1/signing-keys", headers={"Authorization": ""}), 401)


def test_earlier_public_keys_are_listed_after_the_current_one(
    make_api: Callable[..., Api],
) -> None:
    earlier = SigningKey.generate().public
    api = make_api(previous_public_keys=[earlier.base64])
    keys = api.call("GET", "/v1/signing-keys", "reader").json()["keys"]
    assert [k["key_id"] for k in keys][1:] == [earlier.key_id]


def test_no_checkpoint_yet_is_a_404_problem_and_orgs_stay_apart(api: Api) -> None:
    body = assert_problem(api.call("GET", "/v1/checkpoints/latest", "reader"), 404)
    assert "acme" in body["detail"]
    assert_problem(api.call("GET", "/v1/checkpoints/latest?org=evil", "reader"), 403)
    # A platform token names the org.
    assert_problem(api.call("GET", "/v1/checkpoints/latest", "platform"), 422)
    assert_problem(api.call("GET", "/v1/checkpoints/latest?org=acme", "platform"), 404)


def test_the_background_writer_signs_checkpoints_that_verify_with_the_public_key(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(run_projections=True, checkpoint_seconds=0.05)
    first = api.create_task()
    latest = latest_after(api, first["position"])
    assert set(latest) == CHECKPOINT_FIELDS
    assert (latest["org"], latest["seq"], latest["tasks"]) == ("acme", 1, 1)
    # Checked with nothing but the published key.
    (key,) = api.call("GET", "/v1/signing-keys", "reader").json()["keys"]
    public = PublicKey.from_base64(key["public_key"])
    assert latest["key_id"] == key["key_id"]
    assert public.verifies(latest["signature"], signed_bytes(latest))
    # New task events: a new checkpoint, chained to the first; another org has its own.
    second = api.create_task()
    api.create_task("intruder_writer")
    later = latest_after(api, second["position"])
    assert later["seq"] >= 2 and later["tasks"] == 2
    assert public.verifies(later["signature"], signed_bytes(later))
    theirs = latest_after(api, 0, who="intruder_admin")
    assert theirs["org"] == "evil" and theirs["tasks"] == 1


def test_an_export_ends_with_a_checkpoint_that_verifies_offline(projected: Api) -> None:
    api = projected
    task = api.create_task()
    at = api.finish(task["id"])["position"]
    api.create_task("intruder_writer")
    response = api.call("GET", f"/v1/export?min_position={at}", "auditor")
    assert response.status_code == 200, response.text
    *events, last = response.text.splitlines()
    trailer = json.loads(last)
    assert set(trailer) == {"checkpoint", "public_key", "algorithm"}
    checkpoint = trailer["checkpoint"]
    assert (checkpoint["kind"], checkpoint["org"], checkpoint["tasks"]) == ("export", "acme", 1)
    assert checkpoint["position"] == int(response.headers["x-export-until"])
    assert all("checkpoint" not in json.loads(line) for line in events)
    (key,) = api.call("GET", "/v1/signing-keys", "auditor").json()["keys"]
    report = verify_lines(response.text.splitlines(), key["public_key"])
    assert report.ok, report.problems
    assert report.key_source == "given" and report.tasks_checked == 1
    assert report.events_checked == len(events)


def test_a_modified_export_fails_offline_verification_with_a_named_problem(
    projected: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = projected
    task = api.create_task()
    at = api.finish(task["id"])["position"]
    response = api.call("GET", f"/v1/export?min_position={at}", "auditor")
    lines = response.text.splitlines(keepends=True)
    (key,) = api.call("GET", "/v1/signing-keys", "auditor").json()["keys"]
    genuine = tmp_path / "export.ndjson"
    genuine.write_text("".join(lines))
    assert verify_bundle(genuine).ok
    assert verify_bundle(genuine, key["public_key"]).ok
    # The command line: exit 0 for an intact export, 1 (and the problem named) otherwise.
    assert cli.main(["verify", "--bundle", str(genuine), "--public-key", key["public_key"]]) == 0
    someone_else = SigningKey.generate().public.base64
    assert cli.main(["verify", "--bundle", str(genuine), "--public-key", someone_else]) == 1
    assert "forged: " in capsys.readouterr().out
    last_version = api.version(task["id"])

    def found(changed: list[str]) -> list[tuple[Any, ...]]:
        path = tmp_path / "changed.ndjson"
        path.write_text("".join(changed))
        report = verify_bundle(path, key["public_key"])
        assert not report.ok
        return [(p.task_id, p.version, p.reason) for p in report.problems]

    # One byte of an event changed: its hash no longer matches.
    created = next(i for i, line in enumerate(lines) if '"TaskCreated"' in line)
    edited = lines[created].replace("Deploy shop", "Deploy shoP")
    assert edited != lines[created]
    problems = found([*lines[:created], edited, *lines[created + 1 :]])
    assert [(t, v) for t, v, _ in problems] == [(task["id"], 1)]
    assert problems[0][2].startswith("edited: ") and "hash does not match" in problems[0][2]
    # A byte that is not UTF-8.
    binary = tmp_path / "binary.ndjson"
    binary.write_bytes("".join(lines).encode().replace(b"Deploy shop", b"Deploy sho\xff", 1))
    assert [p.reason for p in verify_bundle(binary, key["public_key"]).problems] == [
        f"undecodable: line {created + 1}: not UTF-8 text"
    ]
    # A byte that breaks the line.
    problems = found([*lines[:created], "{" + lines[created][2:], *lines[created + 1 :]])
    assert next(r for _, _, r in problems).startswith(f"undecodable: line {created + 1}: not JSON")
    # An event taken out of the middle of the chain: the version is named.
    second = next(i for i, line in enumerate(lines) if '"version":2' in line)
    problems = found([*lines[:second], *lines[second + 1 :]])
    assert [(t, v) for t, v, _ in problems] == [(task["id"], 2)]
    # The chain's last event taken out: the checkpoint no longer matches the heads.
    final = max(i for i, line in enumerate(lines) if f'"version":{last_version},' in line)
    problems = found([*lines[:final], *lines[final + 1 :]])
    assert len(problems) == 1 and "root does not match" in problems[0][2]
    # The checkpoint line altered: its signature fails.
    trailer = json.loads(lines[-1])
    trailer["checkpoint"]["position"] += 1
    problems = found([*lines[:-1], json.dumps(trailer) + "\n"])
    assert len(problems) == 1 and problems[0][2].startswith("forged: ")
    assert "signature does not verify" in problems[0][2]
    # No checkpoint at all.
    problems = found(lines[:-1])
    assert [r for _, _, r in problems] == ["removed: the export ends without a checkpoint line"]


def test_verify_names_a_task_whose_checkpointed_events_were_cut_off(
    make_api: Callable[..., Api], store_url: str
) -> None:
    api = make_api(run_projections=True, checkpoint_seconds=0.05)
    task = api.create_task()
    at = api.finish(task["id"])["position"]
    latest_after(api, at)
    clean = api.call("GET", "/v1/verify", "auditor").json()
    assert (clean["ok"], clean["problems"]) == (True, [])
    if store_url.startswith("memory"):
        return  # memory:// has no database to tamper with
    # Everything after the creation is cut off, straight in the database.
    with tamper(store_url) as conn:
        sqlite = store_url.startswith("sqlite")
        table, mark = ("stored_events", "?") if sqlite else ("taskledger_events", "%s")
        conn.execute(
            f"DELETE FROM {table} WHERE originator_id = {mark} AND originator_version > 1",
            (UUID(task["id"]).hex if sqlite else UUID(task["id"]),),
        )
    found = api.call("GET", "/v1/verify", "auditor").json()
    assert found["ok"] is False
    assert [(p["task_id"], p["version"]) for p in found["problems"]] == [(task["id"], 2)]
    assert found["problems"][0]["reason"].startswith("removed: versions 2 to ")
