"""Verification: recompute every task's hash chain from the stored rows and name what differs.

It reads the rows the store holds (not the aggregates, not the read models): a whole
store or org a page of the notification log at a time, one task with its stream.
Each row is decoded on its own, so one that cannot be decoded is named and the rest
are still checked. What is kept per row is small (version and the two hashes), so
memory grows with the number of events only by a few dozen bytes each.

Each event is judged by what it holds, against its neighbours' *stored* hashes:

- `edited`: its content no longer gives its stored hash; or it gives it, but the
  next event chains to another hash (it was rewritten and its hash recomputed);
- `reordered`: it gives its stored hash only at another version, the one its
  `prev_hash` places it at (two events' versions were swapped);
- `removed`: a version below the task's latest is missing;
- `undecodable`: the row's state cannot be read; `unhashed`: it has no hash.

An edit to event 3 does not make event 4 look wrong: event 4 is compared with the
hash event 3 was stored with, which still is the one it chains to.

A task whose first event is removed or undecodable has no known org: only a
verification of the whole store (no `org`) names it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from domain.chain import GENESIS, hashed_entry, json_entry_hash
from integrity.problems import EDITED, REMOVED, REORDERED, UNDECODABLE, UNHASHED, Problem

# Every task event class is nested in the aggregate: `domain.task:Task.<Event>`.
TASK_TOPIC_PREFIX = "domain.task:Task."
CREATED = ".TaskCreated"
PAGE = 5_000

StoredHashes = Mapping[tuple[str, int], str]
ExtraCheck = Callable[[StoredHashes], list[Problem]]
Progress = Callable[[int, int], None]  # (rows read, rows in all), for a progress bar


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    tasks_checked: int
    events_checked: int
    problems: list[Problem]


@dataclass(slots=True)
class _Row:
    """What verification keeps of one stored event."""

    version: int
    kind: str  # "ok", "mismatch" (hash differs at this version), UNDECODABLE or UNHASHED
    stored_hash: str | None = None
    prev_hash: str | None = None
    # Kept only for a mismatch: to try the version its prev_hash places it at.
    entry: dict[str, Any] | None = None


@dataclass
class _Stream:
    """One task's rows, and its org once its first event is read."""

    rows: list[_Row] = field(default_factory=list)
    org: str | None = None


def verify_store(
    ledger: Application,
    *,
    org: str | None = None,
    task_id: UUID | str | None = None,
    progress: Progress | None = None,
    extra_checks: Sequence[ExtraCheck] = (),
) -> VerifyReport:
    """Checks every task chain in scope (the store, an org, or one task of it).

    `extra_checks` get `{(task id, version): stored hash}` of the events in scope
    (tasks of unknown org included) and add their problems: the checkpoints' check.
    """
    streams: dict[str, _Stream] = {}
    if task_id is None:
        rows = _log_rows(ledger, progress)
    else:
        rows = _stream_rows(ledger, UUID(str(task_id)), progress)
    for stored in rows:
        stream = streams.setdefault(str(stored.originator_id), _Stream())
        if org is not None and stream.org not in (None, org):
            continue  # another org's task: not read further
        row, created_in = _read_row(ledger, stored)
        stream.rows.append(row)
        if created_in is not None:
            stream.org = created_in
    # Out of scope: another org's tasks; in it for the extra checks: tasks of unknown org.
    checked = {t: s for t, s in streams.items() if org is None or s.org == org}
    hashed_scope = {t: s for t, s in streams.items() if org is None or s.org in (org, None)}
    if task_id is not None and not checked:
        return VerifyReport(ok=True, tasks_checked=0, events_checked=0, problems=[])
    problems: list[Problem] = []
    for tid, stream in checked.items():
        problems.extend(_chain_problems(tid, stream.rows))
    stored_hashes = {
        (tid, row.version): row.stored_hash
        for tid, stream in hashed_scope.items()
        for row in stream.rows
        if row.stored_hash is not None
    }
    for check in extra_checks:
        problems.extend(check(stored_hashes))
    problems.sort(key=lambda p: (p.task_id or "", p.version or 0, p.checkpoint or 0, p.reason))
    return VerifyReport(
        ok=not problems,
        tasks_checked=len(checked),
        events_checked=sum(len(s.rows) for s in checked.values()),
        problems=problems,
    )


# ---------------------------------------------------------------- reading the rows


def _log_rows(ledger: Application, progress: Progress | None) -> Iterable[StoredEvent]:
    """Every task event of the store, a page of the notification log at a time."""
    recorder: Any = ledger.recorder
    total = recorder.max_notification_id() or 0
    start = 1
    while True:
        page = recorder.select_notifications(start=start, limit=PAGE)
        for notification in page:
            if notification.topic.startswith(TASK_TOPIC_PREFIX):
                yield notification
        if progress is not None:
            progress(page[-1].id if page else total, max(total, page[-1].id if page else 0))
        if len(page) < PAGE:
            return
        start = page[-1].id + 1


def _stream_rows(
    ledger: Application, task_id: UUID, progress: Progress | None
) -> list[StoredEvent]:
    recorder: Any = ledger.recorder
    rows = [r for r in recorder.select_events(task_id) if r.topic.startswith(TASK_TOPIC_PREFIX)]
    if progress is not None:
        progress(len(rows), len(rows))
    return list(rows)


def _read_row(ledger: Application, stored: StoredEvent) -> tuple[_Row, str | None]:
    """The row as verification keeps it, and the org when it is the task's creation."""
    version = stored.originator_version
    try:
        event: Any = ledger.mapper.to_domain_event(stored)
        state = vars(event)
        stored_hash = state.get("hash")
        entry = hashed_entry(event)
        org = state.get("org") if stored.topic.endswith(CREATED) else None
    except Exception:  # a row that cannot be read is a finding, not a failure
        return _Row(version, UNDECODABLE), _org_of_damaged(stored)
    prev_hash = entry["prev_hash"]
    if not isinstance(stored_hash, str) or not isinstance(prev_hash, str):
        return _Row(version, UNHASHED, prev_hash=prev_hash), org
    if json_entry_hash(entry) == stored_hash:
        return _Row(version, "ok", stored_hash, prev_hash), org
    return _Row(version, "mismatch", stored_hash, prev_hash, entry), org


def _org_of_damaged(stored: StoredEvent) -> str | None:
    """The org a creation that cannot be decoded still names, if its JSON is readable."""
    if not stored.topic.endswith(CREATED):
        return None
    try:
        org = json.loads(stored.state).get("org")
    except Exception:
        return None
    return org if isinstance(org, str) else None


# ---------------------------------------------------------------- judging one chain


def _chain_problems(task_id: str, rows: list[_Row]) -> list[Problem]:
    by_version = {row.version: row for row in rows}
    problems = [
        Problem(task_id, version, f"{REMOVED}: no event is stored at this version")
        for version in range(1, max(by_version) + 1)
        if version not in by_version
    ]
    placed = _placed_versions(rows)
    by_hash = {row.stored_hash: row for row in rows if row.stored_hash is not None}
    for row in sorted(rows, key=lambda r: r.version):
        if row.kind == UNDECODABLE:
            problems.append(
                Problem(task_id, row.version, f"{UNDECODABLE}: its state cannot be read")
            )
        elif row.kind == UNHASHED:
            problems.append(Problem(task_id, row.version, f"{UNHASHED}: it has no hash"))
        elif row.kind == "mismatch":
            problems.append(_mismatch(task_id, row, placed.get(id(row))))
        else:
            rewritten = _rewritten_predecessor(row, by_version, by_hash, placed)
            if rewritten is not None:
                problems.append(
                    Problem(
                        task_id,
                        rewritten,
                        f"{EDITED}: its hash was recomputed, but event {row.version} "
                        "still chains to the hash it was first stored with",
                    )
                )
    return problems


def _placed_versions(rows: list[_Row]) -> dict[int, int]:
    """Where each row's content places it, by following prev_hash links (keyed by id(row)).

    From GENESIS the chain is walked hash by hash; a row whose prev_hash matches
    no stored hash (its predecessor is gone or damaged) starts a walk at its own
    version.
    """
    hashed = [row for row in rows if row.prev_hash is not None and row.kind != UNHASHED]
    successor = {row.prev_hash: row for row in hashed}
    known = {row.stored_hash for row in hashed}
    starts = [(row, 1) for row in hashed if row.prev_hash == GENESIS]
    starts += [(row, row.version) for row in hashed if row.prev_hash not in known | {GENESIS}]
    placed: dict[int, int] = {}
    for first, version in starts:
        row: _Row | None = first
        while row is not None and id(row) not in placed:
            placed[id(row)] = version
            version += 1
            row = successor.get(row.stored_hash) if row.stored_hash else None
    return placed


def _mismatch(task_id: str, row: _Row, placed: int | None) -> Problem:
    assert row.entry is not None
    moved = placed is not None and placed != row.version
    if moved and json_entry_hash({**row.entry, "version": placed}) == row.stored_hash:
        return Problem(
            task_id,
            row.version,
            f"{REORDERED}: it was hashed as version {placed}, stored as {row.version}",
        )
    return Problem(task_id, row.version, f"{EDITED}: its content does not give its stored hash")


def _rewritten_predecessor(
    row: _Row, by_version: dict[int, _Row], by_hash: dict[str, _Row], placed: dict[int, int]
) -> int | None:
    """The version before `row` when that event was rewritten with a recomputed hash.

    `row` itself is sound; its prev_hash must be the stored hash of the event at the
    version before. When that event is missing or already found wrong, nothing more
    is said here.
    """
    if row.version == 1:
        return None
    chained_to = by_hash.get(row.prev_hash) if row.prev_hash is not None else None
    if chained_to is not None and placed.get(id(chained_to)) == row.version - 1:
        return None
    before = by_version.get(row.version - 1)
    if before is None or before.kind != "ok":
        return None
    if chained_to is not None and chained_to.kind != "ok":
        return None
    return row.version - 1
