"""Stored events as projections read them: parsed, and decoded only where read.

A rebuild reads every event in the store. Decoding one the library's way (its
`JSONTranscoder`: the standard library's parser, calling back into Python for every
JSON object; then a domain event object) cost as much as reading it. A projection
reads a few fields of an event, most of them plain JSON values (a status, an org, a
hash). So orjson parses the stored state, and a field holding an encoded object
(`{"_type_": "datetime_iso", "_data_": ...}`) is decoded when it is read, by the
transcoder's own transcodings: the value the library would have given.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper, Notification
from eventsourcing.utils import resolve_topic


@cache
def event_class(topic: str) -> type:
    return resolve_topic(topic)  # type: ignore[no-any-return]


def parse(data: bytes) -> Any:
    """JSON text as plain values; encoded objects stay encoded."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # NaN, or an integer beyond 64 bits: the standard library reads those.
        return json.loads(data)


def is_encoded(value: dict[str, Any]) -> bool:
    """Whether a parsed JSON object is one the transcoder encoded (these two keys only)."""
    return len(value) == 2 and "_type_" in value and "_data_" in value


class StateDecoder:
    """Parses the stored state of one mapper's events, and decodes values of it."""

    def __init__(self, mapper: Mapper[Any]):
        if not isinstance(mapper.transcoder, JSONTranscoder):
            raise TypeError("projections read events stored as JSON (the library's JSONTranscoder)")
        self.mapper = mapper
        self.transcodings = mapper.transcoder.names

    def state(self, notification: Notification) -> dict[str, Any]:
        """The event's stored state, parsed: encoded objects (times, ids) still encoded."""
        data = notification.state
        if self.mapper.cipher:
            data = self.mapper.cipher.decrypt(data)
        if self.mapper.compressor:
            data = self.mapper.compressor.decompress(data)
        return parse(data)  # type: ignore[no-any-return]

    def decoded(self, value: Any) -> Any:
        """A parsed value with its encoded objects decoded, innermost first (as the
        library's transcoder decodes them)."""
        kind = type(value)
        if kind is dict:
            if is_encoded(value):
                transcoding = self.transcodings[value["_type_"]]
                return transcoding.decode(self.decoded(value["_data_"]))
            for item in value.values():
                if type(item) is dict or type(item) is list:
                    return {k: self.decoded(v) for k, v in value.items()}
            return value  # plain already (an actor, a label set): no copy
        if kind is list:
            return [self.decoded(v) for v in value]
        return value
