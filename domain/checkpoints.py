"""Checkpoints: signed statements of where every task chain of an org stood.

A checkpoint names the org, the global `position` it covers, how many task chains
the org had (`tasks`) and their `root`: the hex SHA-256 of the canonical JSON of
the sorted list of `[task_id, version, hash]`, one per task chain, its latest event
at or before `position`. Anyone holding the heads recomputes the root in a line.

Stored checkpoints form a chain of their own, one stream per org: `seq` counts
them from 1, and `previous` is the digest of the checkpoint before (64 zeros for
the first), so one taken out of the middle is noticed. The `signature` (Ed25519,
base64) is over the canonical JSON of every other field of the document; the
digest of a checkpoint is the SHA-256 of the canonical JSON of the whole document,
signature included.

This module is pure: the documents, the event that stores one, and the rules
that compute `root`, the signed bytes and the digest. Signing is handed in (a
`Signer`), so the domain knows no key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import NAMESPACE_URL, UUID, uuid5

from domain.chain import GENESIS, canonical_json
from domain.stamped import StampedEvent

# The fields of a stored checkpoint document, in the order they are shown.
DOCUMENT_FIELDS = (
    "org",
    "seq",
    "position",
    "tasks",
    "root",
    "previous",
    "signed_at",
    "key_id",
    "signature",
)
CHECKPOINT_NAMESPACE = uuid5(NAMESPACE_URL, "https://tasktrail/checkpoints")


@dataclass(frozen=True, order=True)
class ChainHead:
    """A task chain's latest event: which task, its version and hash (and where it is)."""

    task_id: str
    version: int
    hash: str
    position: int = 0

    def as_list(self) -> list[Any]:
        return [self.task_id, self.version, self.hash]


class Signer(Protocol):
    """What signs a checkpoint: a key's id, and its signature (base64) of some bytes."""

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> str: ...


def heads_root(heads: Iterable[ChainHead | tuple[str, int, str] | list[Any]]) -> str:
    """The root of a set of chain heads: SHA-256 of the canonical JSON of the sorted triples."""
    triples = sorted(
        [str(h.task_id), int(h.version), str(h.hash)]
        if isinstance(h, ChainHead)
        else [str(h[0]), int(h[1]), str(h[2])]
        for h in heads
    )
    return hashlib.sha256(canonical_json(triples)).hexdigest()


def signed_bytes(document: Mapping[str, Any]) -> bytes:
    """What a checkpoint's signature signs: the canonical JSON of every other field."""
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


def checkpoint_digest(document: Mapping[str, Any]) -> str:
    """The digest the next checkpoint names as `previous`: the whole document, hashed."""
    return hashlib.sha256(canonical_json(dict(document))).hexdigest()


def sign_document(unsigned: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """`unsigned` with the signer's `key_id` and its `signature` added."""
    document = {**unsigned, "key_id": signer.key_id}
    return {**document, "signature": signer.sign(signed_bytes(document))}


def checkpoint_stream_id(org: str) -> UUID:
    """The stream of one org's checkpoints: derived, so a writer needs no lookup."""
    return uuid5(CHECKPOINT_NAMESPACE, org)


class CheckpointSigned(StampedEvent):
    """A checkpoint was signed; `changed` lists the heads that moved since the previous one.

    `changed` is not signed on its own: replaying every checkpoint's changes from
    the first rebuilds the heads each one vouches for, and their root must equal
    the signed `root`, so a changed list that lies is caught all the same.
    """

    org: str
    seq: int
    position: int
    tasks: int
    root: str
    previous: str
    signed_at: str
    key_id: str
    signature: str
    changed: list[list[Any]]

    @property
    def document(self) -> dict[str, Any]:
        """The checkpoint as it is signed and shown (without `changed`)."""
        return {name: getattr(self, name) for name in DOCUMENT_FIELDS}

    @property
    def changed_heads(self) -> list[ChainHead]:
        return [ChainHead(str(t), int(v), str(h)) for t, v, h in self.changed]


def next_checkpoint(
    last: CheckpointSigned | None,
    *,
    org: str,
    heads: list[ChainHead],
    signed_at: str,
    signer: Signer,
) -> CheckpointSigned | None:
    """The checkpoint following `last` over `heads`; None when no head moved past it."""
    since = last.position if last is not None else 0
    changed = sorted(h for h in heads if h.position > since)
    if not changed:
        return None
    unsigned = {
        "org": org,
        "seq": (last.seq if last is not None else 0) + 1,
        "position": max(h.position for h in heads),
        "tasks": len(heads),
        "root": heads_root(heads),
        "previous": checkpoint_digest(last.document) if last is not None else GENESIS,
        "signed_at": signed_at,
    }
    document = sign_document(unsigned, signer)
    return CheckpointSigned(  # type: ignore[call-arg]
        originator_id=checkpoint_stream_id(org),
        originator_version=document["seq"],
        timestamp=CheckpointSigned.create_timestamp(),
        changed=[h.as_list() for h in changed],
        **document,
    )
