"""API keys in the task ledger: issue, list, look up and revoke them.

Keys are streams in the ledger's store (`TaskLedger` is an `ApiKeyLedger`), so an
issued key is saved, and recognised after an ambiguous commit, exactly as a new
task is. The commands live apart from the task's so each module is about one
aggregate.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.api_key import ApiKey, can_see, key_id_for_token, new_token
from domain.application_errors import ApiKeyNotFoundError, ContentionError
from domain.context import command_scope
from domain.idempotency import IdempotentRequest
from domain.resilient_writes import ResilientApplication, reading
from domain.views import key_view


class ApiKeyLedger(ResilientApplication):
    """The commands and queries of API keys, for an application that stores them."""

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
        """The active key a bearer token belongs to, or None."""
        key = self._find(ApiKey, key_id_for_token(token))
        return key_view(key) if key is not None and key.is_active else None

    def get_key(self, key_id: UUID, *, org: str | None = None) -> dict[str, Any]:
        """The API key with this id (in the caller's org), revoked or not."""
        return key_view(self._load_key(key_id, org))

    # ------------------------------------------------------------------ plumbing

    def _load_key(self, key_id: UUID, org: str | None) -> ApiKey:
        key = self._find(ApiKey, key_id)
        if key is None or not can_see(org, key.org):
            raise ApiKeyNotFoundError(key_id)
        return key
