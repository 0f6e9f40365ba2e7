"""Checks of the stored checkpoints, for `verify`: signed, unbroken, and still true.

For each org, its checkpoints are read in order and checked:

- every signature verifies with a known public key (a checkpoint written without
  the key is named: `Problem(checkpoint=seq)`);
- `seq` runs 1, 2, 3, ... and each `previous` is the digest of the checkpoint
  before, so one taken out of the middle is named by its seq, one replaced by a
  forgery is named by the forgery's;
- replaying the heads each checkpoint says changed rebuilds exactly its signed
  `root` (and task count), so the heads a checkpoint vouches for are the signed ones;
- every head a validly signed checkpoint vouches for is still stored with the same
  hash: a task whose latest events were cut off after they were checkpointed is
  named, with the first version that is missing.

The latest checkpoint itself can be removed without a trace here (nothing comes
after it to miss it): an auditor who keeps the one `GET /v1/checkpoints/latest`
showed them can compare it (its seq, its digest) with what the store has later.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from domain.chain import GENESIS
from domain.checkpoint_application import Checkpoints
from domain.checkpoints import CheckpointSigned, checkpoint_digest, heads_root, signed_bytes
from integrity.problems import EDITED, REMOVED, UNDECODABLE, Problem
from integrity.signing import PublicKey

# A checkpoint signed with a key that is not ours, or whose signature fails.
FORGED = "forged"

StoredHashes = Mapping[tuple[str, int], str]
ExtraCheck = Callable[[StoredHashes], list[Problem]]


@dataclass(frozen=True)
class Vouched:
    """A head a validly signed checkpoint vouches for."""

    version: int
    hash: str
    org: str
    seq: int


@dataclass
class OrgChain:
    """One org's checkpoints as the check walks them."""

    org: str
    checkpoints: list[CheckpointSigned] = field(default_factory=list)


def checkpoint_check(
    checkpoints: Checkpoints,
    keys: Sequence[PublicKey],
    *,
    org: str | None = None,
    task_id: str | UUID | None = None,
) -> ExtraCheck:
    """`checkpoint_problems` as one of `verify_store`'s extra checks, scoped like it."""

    def check(stored: StoredHashes) -> list[Problem]:
        return checkpoint_problems(checkpoints, keys, stored, org=org, task_id=task_id)

    return check


def checkpoint_problems(
    checkpoints: Checkpoints,
    keys: Sequence[PublicKey],
    stored: StoredHashes,
    *,
    org: str | None = None,
    task_id: str | UUID | None = None,
) -> list[Problem]:
    """Every problem of the stored checkpoints (of `org`), and of the heads they vouch for.

    With `task_id`, only that task's heads are checked (the checkpoints' own
    problems are outside a one-task verification).
    """
    problems: list[Problem] = []
    chains: dict[str, OrgChain] = {}

    def undecodable(stream_id: UUID, version: int, error: Exception) -> None:
        problems.append(
            Problem(
                None,
                None,
                f"{UNDECODABLE}: checkpoint record {version} of stream {stream_id}: {error}",
                checkpoint=version,
            )
        )

    for checkpoint in checkpoints.all(org, on_undecodable=undecodable):
        chains.setdefault(checkpoint.org, OrgChain(checkpoint.org)).checkpoints.append(checkpoint)
    by_id = {key.key_id: key for key in keys}
    vouched: dict[str, Vouched] = {}
    for chain in chains.values():
        problems.extend(_walk(chain, by_id, vouched))
    if task_id is not None:
        wanted = str(task_id)
        problems = []
        vouched = {t: v for t, v in vouched.items() if t == wanted}
    problems.extend(_missing_heads(vouched, stored))
    return problems


def _walk(
    chain: OrgChain, keys: Mapping[str, PublicKey], vouched: dict[str, Vouched]
) -> list[Problem]:
    """Checks one org's checkpoints in order, collecting the heads they vouch for."""
    problems: list[Problem] = []
    heads: dict[str, tuple[int, str]] = {}
    # After a gap the heads before it are unknown: roots can no longer be recomputed.
    heads_complete = True
    expected_seq = 1
    before: CheckpointSigned | None = None
    before_sound = True
    for checkpoint in sorted(chain.checkpoints, key=lambda c: c.originator_version):
        seq = checkpoint.originator_version
        name = f"checkpoint {seq} of org {chain.org}"
        gap = seq > expected_seq
        for missing in range(expected_seq, seq):
            problems.append(
                Problem(
                    None,
                    None,
                    f"{REMOVED}: checkpoint {missing} of org {chain.org} is not stored "
                    f"(checkpoint {seq} follows checkpoint {expected_seq - 1})",
                    checkpoint=missing,
                )
            )
        if gap:
            heads_complete = False
        expected_seq = seq + 1
        reasons = _signature_problems(checkpoint, keys)
        forged = bool(reasons)
        if checkpoint.seq != seq:
            reasons.append(f"says it is checkpoint {checkpoint.seq} but is stored as {seq}")
        # A forgery before this one is already named: its digest says nothing of this one.
        if not gap and before_sound:
            previous = checkpoint_digest(before.document) if before is not None else GENESIS
            if checkpoint.previous != previous:
                reasons.append("its previous digest is not the digest of the checkpoint before it")
        for task, version, hash in checkpoint.changed:
            heads[str(task)] = (int(version), str(hash))
        if heads_complete:
            root = heads_root((t, v, h) for t, (v, h) in heads.items())
            if root != checkpoint.root or len(heads) != checkpoint.tasks:
                reasons.append("the heads it records do not add up to its signed root")
        sound = not reasons
        if sound:
            for task, version, hash in checkpoint.changed:
                _vouch(vouched, str(task), Vouched(int(version), str(hash), chain.org, seq))
        else:
            kind = FORGED if forged else EDITED
            reason = f"{kind}: {name}: " + "; ".join(reasons)
            problems.append(Problem(None, None, reason, checkpoint=seq))
            # Its changes cannot be trusted: the roots after it cannot be recomputed.
            heads_complete = False
        before, before_sound = checkpoint, sound
    return problems


def _signature_problems(checkpoint: CheckpointSigned, keys: Mapping[str, PublicKey]) -> list[str]:
    key = keys.get(checkpoint.key_id)
    if key is None:
        return [f"signed with unknown key {checkpoint.key_id!r}"]
    if not key.verifies(checkpoint.signature, signed_bytes(checkpoint.document)):
        return [f"its signature does not verify with key {checkpoint.key_id}"]
    return []


def _vouch(vouched: dict[str, Vouched], task: str, head: Vouched) -> None:
    known = vouched.get(task)
    if known is None or head.version >= known.version:
        vouched[task] = head


def _missing_heads(vouched: Mapping[str, Vouched], stored: StoredHashes) -> list[Problem]:
    """Heads a checkpoint vouched for that are gone, or stored with another hash.

    A vouched event found at another version (two events' versions swapped) is left
    to the chain check, which names it `reordered`: one finding per fault.
    """
    problems: list[Problem] = []
    last_stored, hashes = _stored_of(stored, vouched.keys())
    for task, head in sorted(vouched.items()):
        found = stored.get((task, head.version))
        where = f"checkpoint {head.seq} of org {head.org}"
        if found is None:
            first_missing = min(last_stored.get(task, 0), head.version - 1) + 1
            problems.append(
                Problem(
                    task,
                    first_missing,
                    f"{REMOVED}: versions {first_missing} to {head.version} are not stored, "
                    f"but {where} vouches for version {head.version}",
                )
            )
        elif found != head.hash and head.hash not in hashes.get(task, ()):
            problems.append(
                Problem(
                    task,
                    head.version,
                    f"{EDITED}: its hash is not the one {where} vouches for ({head.hash})",
                )
            )
    return problems


def _stored_of(
    stored: StoredHashes, tasks: Iterable[str]
) -> tuple[dict[str, int], dict[str, set[str]]]:
    """For the given tasks: the last version stored, and every hash stored."""
    wanted = set(tasks)
    last: dict[str, int] = defaultdict(int)
    hashes: dict[str, set[str]] = defaultdict(set)
    for (task, version), hash in stored.items():
        if task in wanted:
            last[task] = max(last[task], version)
            hashes[task].add(hash)
    return last, hashes
