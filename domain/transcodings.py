"""How a task survives the JSON round trip of stored events and snapshots.

Jobs and steps are encoded as dicts of their fields. And plain mappings that come
from callers (labels, errors, authors) are escaped when they look like the library's
own encoding of an object, `{"_type_": ..., "_data_": ...}`: the library's decoder
would otherwise read them as an object of that type, or fail on an unknown type
name, and the stream holding them could never be loaded again.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding

from domain.work import Job, Step

_ENVELOPE_KEYS = frozenset({"_type_", "_data_"})


class _LookalikeMapping:
    """A mapping that would be mistaken for an encoded object, on its way to JSON."""

    def __init__(self, mapping: dict[str, Any]):
        self.mapping = mapping


def escaped(value: Any) -> Any:
    """`value` with every mapping that looks like an encoded object wrapped for escaping."""
    if isinstance(value, dict):
        mapping = {k: escaped(v) for k, v in value.items()}
        if len(mapping) == len(_ENVELOPE_KEYS) and mapping.keys() == _ENVELOPE_KEYS:
            return _LookalikeMapping(mapping)
        return mapping
    if isinstance(value, list):
        return [escaped(v) for v in value]
    if isinstance(value, tuple):
        return tuple(escaped(v) for v in value)
    return value


class LookalikeMappingAsPairs(Transcoding):
    type = _LookalikeMapping
    name = "tasktrail_mapping"

    def encode(self, obj: _LookalikeMapping) -> list[list[Any]]:
        return [[k, v] for k, v in obj.mapping.items()]

    def decode(self, data: list[list[Any]]) -> dict[str, Any]:
        return {k: v for k, v in data}


class EscapingJSONTranscoder(JSONTranscoder):
    """The library's JSON transcoder, escaping caller mappings that look like objects."""

    def encode(self, obj: Any) -> bytes:
        return super().encode(escaped(obj))


class StepAsDict(Transcoding):
    type = Step
    name = "tasktrail_step"

    def encode(self, obj: Step) -> dict[str, Any]:
        # The encoder does not look inside what a transcoding returns: escape here too.
        return {f.name: escaped(getattr(obj, f.name)) for f in fields(obj)}

    def decode(self, data: dict[str, Any]) -> Step:
        return Step(**data)


class JobAsDict(Transcoding):
    type = Job
    name = "tasktrail_job"

    def encode(self, obj: Job) -> dict[str, Any]:
        # Steps stay objects here: the transcoder encodes them with StepAsDict.
        return {f.name: escaped(getattr(obj, f.name)) for f in fields(obj)}

    def decode(self, data: dict[str, Any]) -> Job:
        return Job(**data)
