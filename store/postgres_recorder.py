"""The PostgreSQL recorder of both stores: a write is sent as plain statements, never pipelined.

The library's recorder sends each write in psycopg's pipeline mode. With psycopg
3.3.9 a pipelined write that the socket does not take in one go is never sent
whole: the pipeline stops flushing once its last command is queued, then waits for
the server's answer, while the server waits for the rest of the query (state
`ClientRead`). Measured on loopback: one event of 8 MiB, or 10,000 small events in
one write, hang forever; 3 MB goes through. Over a real network the threshold is the
socket's buffer. A task's plan or a log chunk is up to 1 MiB of text whose JSON can be
six times that (control characters are escaped as `\\u00XX`), and a hung write keeps the table's
EXCLUSIVE lock: every other write would wait behind it. Outside a pipeline,
psycopg flushes until everything is sent. Same statements, same lock, same order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from domain.store_errors import StoreUnreachableError

INSERT_ATTEMPTS = 10
INSERT_RETRY_WAIT = 0.2


class UnpipelinedPostgresRecorder(PostgresApplicationRecorder):
    """The library's recorder, writing without psycopg's pipeline mode."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Inserts in one transaction, retrying a dropped connection as the library does.

        A dropped connection may have taken the commit's acknowledgement with it, so
        once an attempt has failed that way, a later failure to get a connection or
        the lock is no proof that nothing was stored: it is raised as an
        `OperationalError`, for the caller to read back, never as "unreachable".
        """
        if not stored_events:
            return None
        for attempt in range(1, INSERT_ATTEMPTS + 1):
            try:
                return self._insert_once(stored_events, **kwargs)
            except StoreUnreachableError as error:
                if attempt == 1:
                    raise
                raise OperationalError(
                    f"an earlier attempt may have committed; then: {error}"
                ) from error
            except (InterfaceError, OperationalError):
                if attempt == INSERT_ATTEMPTS:
                    raise
                time.sleep(INSERT_RETRY_WAIT)
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert_once(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self.datastore.transaction(commit=True) as cursor:
            # Locks the table (commit order = notification order), notifies, inserts.
            self._insert_stored_events(cursor, stored_events, **kwargs)
            return self._fetch_ids_after_insert_events(cursor, stored_events, **kwargs)
