"""Response shapes of the integrity reads: signing keys and signed checkpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas import Response


class SigningKeyPublic(Response):
    key_id: str = Field(description="The first 16 hex digits of the SHA-256 of the raw key.")
    algorithm: Literal["Ed25519"]
    public_key: str = Field(description="The 32 raw bytes of the public key, base64.")


class SigningKeyList(Response):
    keys: list[SigningKeyPublic]


class CheckpointPublic(Response):
    """A signed checkpoint: the signature is over the canonical JSON of the other fields."""

    org: str
    seq: int = Field(description="1 for the org's first checkpoint, then one more each time.")
    position: int = Field(description="The global position whose task chains it covers.")
    tasks: int = Field(description="How many task chains the org had at `position`.")
    root: str = Field(
        description="Hex SHA-256 of the canonical JSON of the sorted "
        "`[task_id, version, hash]` of every task chain's head."
    )
    previous: str = Field(description="The digest of the checkpoint before (64 zeros: none).")
    signed_at: str = Field(description="RFC 3339, exactly as signed.")
    key_id: str
    signature: str = Field(description="Ed25519, base64.")
