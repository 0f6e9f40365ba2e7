"""What a store raises when it cannot be reached, in the library's own terms.

The domain's applications retry and detect ambiguous commits on these; the store
package (`store.config`) raises `StoreUnreachableError` when its pool gives up.
"""

from __future__ import annotations

from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError


class StoreUnreachableError(PersistenceError):
    """Raised when no connection to the store could be had within the connect timeout.

    Deliberately not an `OperationalError`: the library's recorders retry those, and
    waiting the whole timeout ten times over helps no one.
    """


# What a store that cannot be reached (or dropped the connection) raises.
STORE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    StoreUnreachableError,
)
