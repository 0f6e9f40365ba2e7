"""API keys in the task ledger: issue, list, look up and revoke them.

Keys are streams in the ledger's store (`TaskLedger` is an `ApiKeyLedger`), so an
issued key is saved, and recognised after an ambiguous commit, exactly as a new
task is. The commands live apart from the task's so each module is about one
aggregate.

Every request resolves its bearer token here (`find_key`), and every caller of one
key shares it: the lookup keeps the keys it has seen and asks the store only for
events after the version it holds (one indexed query, no lock, no copy), so a key
revoked by any process stops working at once without making one key's callers
queue behind each other.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.api_key import ApiKey, can_see, key_id_for_token, new_token
from domain.application_errors import ApiKeyNotFoundError, ContentionError
from domain.context import command_scope
from domain.idempotency import IdempotentRequest
from domain.resilient_writes import ResilientApplication, reading
from domain.views import key_view

# Keys whose last seen version is kept for the token lookup; more are simply forgotten.
KEY_CACHE_SIZE = 10_000


class ApiKeyLedger(ResilientApplication):
    """The commands and queries of API keys, for an application that stores them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Never mutated once in here: each entry is replaced whole by a newer version.
        self._seen_keys: dict[UUID, ApiKey] = {}
        self._seen_keys_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ commands

    def issue_key(
        self, *, org: str, role: str, name: str, request: IdempotentRequest | None = None
    ) -> tuple[dict[str, Any], str | None, int]:
        """Issues an API key; the token is returned here once and never stored.

        A retried keyed request gets the key again, but not its token (which is gone).
        """
        token = new_token()
        with command_scope() as command_id:
            key = ApiKey.issue(token=token, org=org, role=role, name=name, now=self.clock())
            position = self._save_new(key, command_id, self._answer(request, key))
        self._remember_key(key)
        return key_view(key), token, position

    def list_keys(self, *, org: str | None = None) -> list[dict[str, Any]]:
        """Every API key (of one org), oldest first, revoked ones included."""
        topic = get_topic(ApiKey.ApiKeyIssued)
        keys, start = [], None
        with reading():
            while True:
                page = self.recorder.select_notifications(
                    start=start, limit=500, topics=[topic], inclusive_of_start=False
                )
                for notification in page:
                    key: Any = self.repository.get(UUID(str(notification.originator_id)))
                    if can_see(org, key.org):
                        keys.append(key_view(key))
                if len(page) < 500:
                    return keys
                start = page[-1].id

    def revoke_key(self, key_id: UUID, *, org: str | None = None) -> None:
        """Revokes an API key: its token stops working at once."""
        with command_scope() as command_id:
            for _ in range(self.max_attempts):
                key = self._load_key(key_id, org)
                loaded_version = key.version
                key.revoke(self.clock())  # a second revoke is a conflict, after a reload too
                if self._save_as_command(key_id, loaded_version, command_id, key) is None:
                    continue  # revoked concurrently: the reload says so
                return
        raise ContentionError(f"API key {key_id} kept changing; try again")

    # ------------------------------------------------------------------ queries

    def find_key(self, token: str) -> dict[str, Any] | None:
        """The active key a bearer token belongs to, or None (current: read from the store)."""
        key = self._current_key(key_id_for_token(token))
        return key_view(key) if key is not None and key.is_active else None

    def get_key(self, key_id: UUID, *, org: str | None = None) -> dict[str, Any]:
        """The API key with this id (in the caller's org), revoked or not."""
        return key_view(self._load_key(key_id, org))

    # ------------------------------------------------------------------ plumbing

    def _current_key(self, key_id: UUID) -> ApiKey | None:
        """The key as stored now: the one seen last, if nothing was stored after it."""
        seen = self._seen_keys.get(key_id)
        if seen is not None:
            with reading():
                changed = next(iter(self.events.get(key_id, gt=seen.version, limit=1)), None)
            if changed is None:
                return seen
        key = self._find(ApiKey, key_id)
        if key is not None:
            self._remember_key(key)
        return key

    def _remember_key(self, key: ApiKey) -> None:
        """Keeps a stored version of a key (never a pending one: callers saved it first)."""
        with self._seen_keys_lock:
            if len(self._seen_keys) >= KEY_CACHE_SIZE:
                self._seen_keys.clear()
            self._seen_keys[key.id] = key

    def _load_key(self, key_id: UUID, org: str | None) -> ApiKey:
        key = self._find(ApiKey, key_id)
        if key is None or not can_see(org, key.org):
            raise ApiKeyNotFoundError(key_id)
        return key
