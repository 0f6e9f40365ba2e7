"""How the task's entities survive the JSON round trip of snapshots."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from eventsourcing.persistence import Transcoding

from domain.work import Job, Step


class StepAsDict(Transcoding):
    type = Step
    name = "tasktrail_step"

    def encode(self, obj: Step) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in fields(obj)}

    def decode(self, data: dict[str, Any]) -> Step:
        return Step(**data)


class JobAsDict(Transcoding):
    type = Job
    name = "tasktrail_job"

    def encode(self, obj: Job) -> dict[str, Any]:
        # Steps stay objects here: the transcoder encodes them with StepAsDict.
        return {f.name: getattr(obj, f.name) for f in fields(obj)}

    def decode(self, data: dict[str, Any]) -> Job:
        return Job(**data)
