"""The platform administrator's token: from the environment, or generated once into var/.

`TASKTRAIL_ADMIN_TOKEN` wins and nothing is written. Otherwise the token lives in
`var/admin-token`, mode 0600:
- missing, or empty/blank (a crash mid-write by an older version, a stray `touch`):
  a new token is generated and renamed into place whole, so no process ever reads
  half a token. Processes starting together decide one at a time (a lock on the var
  directory): one generates, the others read its token;
- readable or writable by group or others: the mode is tightened to 0600 and a
  warning is logged, saying to delete the file and restart for a new token (the old
  one may have been read). Refusing to start would not un-read it; replacing it
  silently would lock out whoever holds it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from api.settings import Settings

TOKEN_FILE = "admin-token"
PRIVATE = 0o600

logger = logging.getLogger("tasktrail.admin_token")


def token_path(settings: Settings) -> Path:
    return settings.var_dir / TOKEN_FILE


def read_admin_token(settings: Settings) -> str | None:
    """The token to accept: the environment's, else the file's; None if neither has one."""
    if settings.admin_token:
        return settings.admin_token
    return _stored_token(token_path(settings))


def ensure_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token, and whether it was generated just now (to be printed once)."""
    if settings.admin_token:
        return settings.admin_token, False
    path = token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _deciding_alone(path.parent):
        existing = _stored_token(path)
        if existing:
            _keep_private(path)
            return existing, False
        token = "tt_admin_" + secrets.token_urlsafe(32)
        _publish(path, token)
        return token, True


def _stored_token(path: Path) -> str | None:
    """The token in the file; None when the file is missing or holds nothing."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def _keep_private(path: Path) -> None:
    """Tightens a token file others may read to 0600, and says so."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    path.chmod(PRIVATE)
    logger.warning(
        "%s had mode %s (group or others could read it); it is now %s. The token may "
        "have been read: delete the file and restart to generate a new one.",
        path,
        oct(mode),
        oct(PRIVATE),
    )


@contextmanager
def _deciding_alone(directory: Path) -> Iterator[None]:
    """Holds an exclusive lock on the directory (released when its descriptor closes)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _publish(path: Path, token: str) -> None:
    """Puts a file holding `token` (mode 0600) at `path` in one step, replacing a blank one."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    # Created 0600 from the start: the secret is never readable by others, not even
    # for a moment.
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
