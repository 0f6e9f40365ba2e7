"""The library's repository, made safe for concurrent reads of one cached aggregate."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from eventsourcing.application import Repository


class ConsistentRepository(Repository[UUID]):
    """The library's repository, but a cached aggregate is never copied mid-update.

    The library fast-forwards a cached aggregate under a lock, then deep-copies it for
    the caller after releasing that lock: a second reader fast-forwarding the same
    object meanwhile hands the first a copy whose version is older than its state
    (a torn read). Reads of one aggregate are serialised here (striped locks).
    """

    _STRIPES = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stripes = [threading.Lock() for _ in range(self._STRIPES)]

    def get(self, aggregate_id: UUID, *, version: int | None = None, **kwargs: Any) -> Any:
        if self.cache is None or version is not None:
            return super().get(aggregate_id, version=version, **kwargs)
        with self._stripes[hash(aggregate_id) % self._STRIPES]:
            return super().get(aggregate_id, **kwargs)
