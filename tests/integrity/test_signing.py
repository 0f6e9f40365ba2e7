"""Signing keys: generated once with mode 0600, reused, and verifiable by their public half."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from integrity.signing import KeyFormatError, PublicKey, SigningKey, load_signing_key


def test_a_missing_key_is_generated_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "signing-key"
    first = load_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_signing_key(path)
    assert again.key_id == first.key_id
    assert len(first.key_id) == 16


def test_a_signature_verifies_with_the_public_key_alone() -> None:
    key = SigningKey.generate()
    signature = key.sign(b"checkpoint")
    public = PublicKey.from_base64(key.public.base64)
    assert public.verifies(signature, b"checkpoint")
    assert not public.verifies(signature, b"checkpoinT")
    assert not SigningKey.generate().public.verifies(signature, b"checkpoint")
    assert not public.verifies("not base64!", b"checkpoint")


def test_a_file_that_is_not_an_ed25519_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing-key"
    path.write_text("not a key")
    with pytest.raises(KeyFormatError, match="signing-key"):
        load_signing_key(path)
    with pytest.raises(KeyFormatError):
        PublicKey.from_base64("AAAA")
