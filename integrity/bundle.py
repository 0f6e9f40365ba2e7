"""Export bundles: an export that ends with a checkpoint, checked offline.

`GET /v1/export` writes one feed entry per line and, last, one line

    {"checkpoint": {"kind": "export", "org", "after", "position", "tasks", "root",
                    "signed_at", "key_id", "signature"},
     "public_key": "<base64>", "algorithm": "Ed25519"}

signed when the export was made, over the heads of the exported events: each task's
last exported event (`[task_id, version, hash]`), rooted as stored checkpoints are
(`domain.checkpoints.heads_root`). `verify_bundle` needs nothing but the file and a
public key (the bundle's own, or one given, from `GET /v1/signing-keys`):

- every task event's hash is recomputed from its content (`domain.chain`);
- each task's chain is continuous within the export: versions one apart, each
  `prev_hash` the hash before it (the first event of a task chains to 64 zeros);
- the checkpoint's root and task count equal those of the exported heads, so an
  event removed from the end of a chain is noticed too;
- the signature verifies, with a key whose id is the checkpoint's `key_id`.

A key taken from the bundle itself only shows the bundle is intact as written by
the holder of that key: pass the service's published key to know it was the service.
API-key events are exported too but are not chained: only their presence is shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from domain.chain import GENESIS, event_hash
from domain.checkpoint_application import rfc3339
from domain.checkpoints import Signer, heads_root, sign_document, signed_bytes
from integrity.checkpoints import FORGED
from integrity.problems import EDITED, REMOVED, UNDECODABLE, Problem
from integrity.signing import ALGORITHM, KeyFormatError, PublicKey

EXPORT_KIND = "export"


class ExportHeads:
    """The heads of the events an export has written so far; signs them at the end."""

    def __init__(self) -> None:
        self._heads: dict[str, tuple[int, str]] = {}

    def observe(self, entry: dict[str, Any]) -> None:
        task_id, hash = entry.get("task_id"), entry.get("hash")
        if task_id is not None and hash is not None:
            self._heads[str(task_id)] = (int(entry["version"]), str(hash))

    def checkpoint_line(
        self,
        *,
        org: str,
        after: int,
        until: int,
        signer: Signer,
        public_key: PublicKey,
        now: datetime,
    ) -> str:
        """The export's last line: its checkpoint, signed now, and the key to check it."""
        unsigned = {
            "kind": EXPORT_KIND,
            "org": org,
            "after": after,
            "position": until,
            "tasks": len(self._heads),
            "root": heads_root((t, v, h) for t, (v, h) in self._heads.items()),
            "signed_at": rfc3339(now),
        }
        line = {
            "checkpoint": sign_document(unsigned, signer),
            "public_key": public_key.base64,
            "algorithm": ALGORITHM,
        }
        return json.dumps(line, separators=(",", ":")) + "\n"


@dataclass
class BundleReport:
    """What `verify_bundle` found: `ok` when there is nothing wrong."""

    events_checked: int = 0
    tasks_checked: int = 0
    key_id: str | None = None
    # Where the public key came from: "given" (trusted) or "bundle" (integrity only).
    key_source: str | None = None
    checkpoint: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "tasks_checked": self.tasks_checked,
            "key_id": self.key_id,
            "key_source": self.key_source,
            "problems": [asdict(p) for p in self.problems],
        }


def verify_bundle(path: str | Path, public_key: PublicKey | str | None = None) -> BundleReport:
    """Checks an export offline: hashes, chains, the checkpoint's root and signature.

    `public_key` (a `PublicKey`, or its base64) is the key to trust; without it the
    bundle's own key is used, which proves integrity but not who signed.
    """
    with open(path, "rb") as lines:
        return verify_lines(lines, public_key)


def verify_lines(
    lines: Iterable[str | bytes], public_key: PublicKey | str | None = None
) -> BundleReport:
    """`verify_bundle` over lines already at hand (text or bytes, one JSON value each)."""
    report = BundleReport()
    chains: dict[str, tuple[int, str]] = {}
    trailer: dict[str, Any] | None = None
    trailer_line = 0
    number = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if trailer is not None:
            report.problems.append(
                _line_problem(trailer_line, EDITED, "the checkpoint line is not the last line")
            )
            trailer = None
        try:
            value = json.loads(text)
        except UnicodeDecodeError:
            report.problems.append(_line_problem(number, UNDECODABLE, "not UTF-8 text"))
            continue
        except json.JSONDecodeError as error:
            report.problems.append(_line_problem(number, UNDECODABLE, f"not JSON ({error.msg})"))
            continue
        if not isinstance(value, dict):
            report.problems.append(_line_problem(number, UNDECODABLE, "not a JSON object"))
        elif "checkpoint" in value:
            trailer, trailer_line = value, number
        else:
            report.events_checked += 1
            _check_event(value, number, chains, report)
    report.tasks_checked = len(chains)
    if trailer is None:
        report.problems.append(
            Problem(None, None, f"{REMOVED}: the export ends without a checkpoint line")
        )
        return report
    _check_trailer(trailer, trailer_line, chains, public_key, report)
    return report


def _check_event(
    entry: dict[str, Any], number: int, chains: dict[str, tuple[int, str]], report: BundleReport
) -> None:
    task_id = entry.get("task_id")
    if task_id is None:  # an API-key event: not chained
        return
    task = str(task_id)
    version = entry.get("version")
    if not isinstance(version, int):
        report.problems.append(
            _line_problem(number, UNDECODABLE, "an event without a whole-number version")
        )
        return
    try:
        recomputed = event_hash(entry)
    except (KeyError, TypeError, ValueError) as error:
        report.problems.append(
            Problem(task, version, f"{UNDECODABLE}: line {number}: cannot be hashed: {error}")
        )
        return
    if entry.get("hash") != recomputed:
        report.problems.append(
            Problem(task, version, f"{EDITED}: line {number}: its hash does not match its content")
        )
    before = chains.get(task)
    if before is not None:
        last_version, last_hash = before
        if version != last_version + 1:
            report.problems.append(
                Problem(
                    task,
                    last_version + 1,
                    f"{REMOVED}: line {number}: version {version} follows version {last_version}: "
                    "the versions between are missing",
                )
            )
        elif entry.get("prev_hash") != last_hash:
            report.problems.append(
                Problem(
                    task,
                    version,
                    f"{EDITED}: line {number}: its prev_hash is not the hash before it",
                )
            )
    elif version == 1 and entry.get("prev_hash") != GENESIS:
        report.problems.append(
            Problem(task, version, f"{EDITED}: line {number}: a first event must chain to 64 zeros")
        )
    chains[task] = (version, str(entry.get("hash")))


def _check_trailer(
    trailer: dict[str, Any],
    number: int,
    chains: dict[str, tuple[int, str]],
    public_key: PublicKey | str | None,
    report: BundleReport,
) -> None:
    checkpoint = trailer.get("checkpoint")
    if not isinstance(checkpoint, dict):
        report.problems.append(
            _line_problem(number, UNDECODABLE, "the checkpoint is not a JSON object")
        )
        return
    report.checkpoint = checkpoint
    try:
        if public_key is not None:
            key = (
                public_key
                if isinstance(public_key, PublicKey)
                else PublicKey.from_base64(public_key)
            )
            report.key_source = "given"
        else:
            key = PublicKey.from_base64(str(trailer.get("public_key", "")))
            report.key_source = "bundle"
    except KeyFormatError as error:
        report.problems.append(
            _checkpoint_problem(number, FORGED, f"no usable public key: {error}")
        )
        return
    report.key_id = key.key_id
    if checkpoint.get("key_id") != key.key_id:
        report.problems.append(
            _checkpoint_problem(
                number,
                FORGED,
                f"signed with key {checkpoint.get('key_id')!r}, not with key {key.key_id}",
            )
        )
    elif not key.verifies(str(checkpoint.get("signature", "")), signed_bytes(checkpoint)):
        report.problems.append(_checkpoint_problem(number, FORGED, "its signature does not verify"))
    root = heads_root((t, v, h) for t, (v, h) in chains.items())
    if checkpoint.get("root") != root or checkpoint.get("tasks") != len(chains):
        report.problems.append(
            _checkpoint_problem(
                number,
                EDITED,
                "its root does not match the heads of the exported events "
                f"({checkpoint.get('tasks')} task chains signed, {len(chains)} exported)",
            )
        )


def _line_problem(number: int, kind: str, reason: str) -> Problem:
    return Problem(None, None, f"{kind}: line {number}: {reason}")


def _checkpoint_problem(number: int, kind: str, reason: str) -> Problem:
    return Problem(None, None, f"{kind}: line {number}: the export's checkpoint: {reason}")
