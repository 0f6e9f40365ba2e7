"""Hash chains: each task event's hash covers its content and the hash before it.

The hash is hex SHA-256 over the canonical JSON (sorted keys, UTF-8, no spaces) of
seven values, exactly as a timeline, feed or export entry shows them:
`task_id` (text), `version`, `type`, `recorded_at` (RFC 3339, `...Z`), `actor`,
`data` and `prev_hash`. The first event of a task chains to `GENESIS`. So anyone
holding an export can recompute every hash without the service's code; the recipe
is in the README.

Only plain values in, hex text out: no I/O, nothing of the library but the event's
own attributes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from uuid import UUID

GENESIS = "0" * 64

# The keys of the hashed entry, in the contract's words (http-api.md § Integrity).
HASHED_KEYS = ("task_id", "version", "type", "recorded_at", "actor", "data", "prev_hash")

# Attributes every event carries beside its own data; the chain's own two are not data either.
ENVELOPE = frozenset(
    {
        "originator_id",
        "originator_version",
        "originator_topic",
        "timestamp",
        "actor",
        "command_id",
        "request_id",
        "occurred_at",
        "prev_hash",
        "hash",
    }
)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def to_json_value(value: Any) -> Any:
    """`value` as the API's JSON shows it: times in UTC with `Z`, ids as text, tuples as lists."""
    kind = type(value)
    # Exact types first: verification converts every stored event, and most values are plain.
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): to_json_value(v) for k, v in value.items()}
    if kind is list:
        return [to_json_value(v) for v in value]
    if isinstance(value, Enum):
        return to_json_value(value.value)
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in fields(value)}
    raise TypeError(f"no JSON form for {type(value).__name__}")


def rfc3339(moment: datetime) -> str:
    """The moment in UTC as pydantic and orjson write it (microseconds only when non-zero)."""
    if moment.tzinfo is None:
        raise ValueError("a recorded time needs a time zone")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8 (not \\u escapes): one text for one value."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


def event_hash(entry: Mapping[str, Any]) -> str:
    """The hash of an entry holding the seven hashed keys (any other key is ignored)."""
    return json_entry_hash({key: to_json_value(entry[key]) for key in HASHED_KEYS})


def json_entry_hash(entry: Mapping[str, Any]) -> str:
    """`event_hash` of an entry whose values are JSON values already (`hashed_entry`'s)."""
    hashed = {key: entry[key] for key in HASHED_KEYS}
    return hashlib.sha256(canonical_json(hashed)).hexdigest()


def event_data(state: Mapping[str, Any]) -> dict[str, Any]:
    """An event's own data (its attributes without the envelope), as the API shows it."""
    data: dict[str, Any] = to_json_value({k: v for k, v in state.items() if k not in ENVELOPE})
    return data


def hashed_entry(event: Any) -> dict[str, Any]:
    """The seven hashed values of a domain event, as its timeline entry shows them."""
    state = vars(event)
    return {
        "task_id": str(event.originator_id),
        "version": event.originator_version,
        "type": type(event).__name__,
        "recorded_at": rfc3339(event.timestamp),
        "actor": to_json_value(state.get("actor")),
        "data": event_data(state),
        "prev_hash": state.get("prev_hash"),
    }
