"""Ed25519 signing keys: the service's private key, and the public keys anyone verifies with.

The private key is a PKCS #8 PEM file (what `openssl genpkey -algorithm ed25519`
writes), named by `TASKTRAIL_SIGNING_KEY` (default `var/signing-key`). When the file
is missing the service generates one, with mode 0600 from the start. Several
processes starting at once all end up with the same key: each writes a key of its
own to a temporary file and links it into place, and the ones that lose the race
read the winner's.

A public key travels as the base64 of its 32 raw bytes; its `key_id` is the first
16 hex digits of the SHA-256 of those bytes, so anyone can recompute it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

ALGORITHM = "Ed25519"
KEY_ID_HEX_DIGITS = 16


class KeyFormatError(ValueError):
    """Raised when a key (a file, or base64 text) is not an Ed25519 key."""


def key_id_of(raw_public_key: bytes) -> str:
    """The key's short name: the start of the SHA-256 of its raw public bytes."""
    return hashlib.sha256(raw_public_key).hexdigest()[:KEY_ID_HEX_DIGITS]


@dataclass(frozen=True)
class PublicKey:
    """A key that verifies signatures: enough to check a checkpoint offline."""

    raw: bytes

    @property
    def key_id(self) -> str:
        return key_id_of(self.raw)

    @property
    def base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    @classmethod
    def from_base64(cls, text: str) -> PublicKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyFormatError("a public key must be base64 text") from None
        if len(raw) != 32:
            raise KeyFormatError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
        return cls(raw)

    def verifies(self, signature: str, message: bytes) -> bool:
        """Whether `signature` (base64) is this key's signature of `message`."""
        try:
            decoded = base64.b64decode(signature, validate=True)
            Ed25519PublicKey.from_public_bytes(self.raw).verify(decoded, message)
        except (InvalidSignature, binascii.Error, ValueError, TypeError):
            return False
        return True

    def as_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "algorithm": ALGORITHM, "public_key": self.base64}


class SigningKey:
    """The service's private key: signs checkpoints (base64 signatures)."""

    def __init__(self, private: Ed25519PrivateKey):
        self._private = private
        self.public = PublicKey(
            private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode("ascii")

    def pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as error:
            raise KeyFormatError(f"not a PEM private key: {error}") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyFormatError("the signing key must be an Ed25519 key")
        return cls(private)


def load_signing_key(path: Path) -> SigningKey:
    """The key in `path`, generated (mode 0600) when the file does not exist."""
    if not path.exists():
        _create(path)
    try:
        return SigningKey.from_pem(path.read_bytes())
    except KeyFormatError as error:
        raise KeyFormatError(f"{path}: {error}") from None


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Mode 0600 from the start: the secret is never readable by others, not even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(SigningKey.generate().pem())
            handle.flush()
            os.fsync(handle.fileno())
        # link() refuses to replace: a key another process put there first stands.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
