"""The platform administrator's token: from the environment, or generated once into var/."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from api.settings import Settings

TOKEN_FILE = "admin-token"


def token_path(settings: Settings) -> Path:
    return settings.var_dir / TOKEN_FILE


def read_admin_token(settings: Settings) -> str | None:
    if settings.admin_token:
        return settings.admin_token
    path = token_path(settings)
    return path.read_text().strip() if path.exists() else None


def ensure_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token, and whether it was generated just now (to be printed once)."""
    existing = read_admin_token(settings)
    if existing:
        return existing, False
    path = token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "tt_admin_" + secrets.token_urlsafe(32)
    # Create with mode 0600 from the start: the secret is never world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True
