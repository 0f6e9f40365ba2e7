"""Request and response shapes of the HTTP contract, one family per resource.

These are API schemas only: events and table rows have shapes of their own, so
the API can evolve without changing the shape of the past. Request models forbid
unknown fields (server-owned fields can never be smuggled in) and bound every
string and list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from domain import inputs
from domain.plan import KEY_PATTERN, MAX_JOBS, MAX_STEPS_PER_JOB
from domain.status import Status
from domain.task import DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS
from domain.work import Transition

ORG_PATTERN = inputs.ORG_PATTERN.pattern
# Stores keep versions as signed 64-bit integers: a larger one cannot even be asked for.
MAX_VERSION = 2**63 - 1
TYPE_PATTERN = inputs.TYPE_PATTERN.pattern
MAX_IDEMPOTENCY_KEY_LENGTH = 200

Key = Annotated[str, Field(pattern=KEY_PATTERN.pattern, examples=["build"])]
Org = Annotated[str, Field(pattern=ORG_PATTERN, examples=["acme"])]
Name = Annotated[str, Field(min_length=1, max_length=200)]


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:30:00+01:00 has no UTC equivalent in Python
        raise ValueError("time is out of range once converted to UTC") from None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=10_000)


class Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---------------------------------------------------------------- shared pieces


class Author(Request):
    id: Annotated[str, Field(min_length=1, max_length=200)]
    name: Name
    kind: Literal["user", "system", "support"]


class Actor(Response):
    id: str
    name: str
    kind: str


class ErrorDetail(Request):
    message: Annotated[str, Field(min_length=1, max_length=10_000)]
    code: Annotated[str, Field(max_length=200)] | None = None
    user_facing: bool = False


# ---------------------------------------------------------------- tasks: requests


class StepCreate(Request):
    key: Key
    name: Name
    system: bool = False


class JobCreate(Request):
    key: Key
    name: Name
    needs: Annotated[list[Key], Field(max_length=MAX_JOBS)] = []
    system: bool = False
    steps: Annotated[list[StepCreate], Field(min_length=1, max_length=MAX_STEPS_PER_JOB)]


class TaskCreate(Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "org": "acme",
                    "type": "app.deploy",
                    "title": "Deploy shop to production",
                    "kind": "executable",
                    "author": {"id": "u-42", "name": "Alice", "kind": "user"},
                    "project": "shop",
                    "labels": {"app": "shop", "env": "prod"},
                    "jobs": [
                        {
                            "key": "build",
                            "name": "Build image",
                            "steps": [{"key": "clone", "name": "Clone"}],
                        },
                        {
                            "key": "deploy",
                            "name": "Deploy",
                            "needs": ["build"],
                            "steps": [{"key": "rollout", "name": "Roll out"}],
                        },
                    ],
                }
            ]
        },
    )

    org: Org | None = None
    type: Annotated[str, Field(pattern=TYPE_PATTERN)]
    title: Annotated[str, Field(min_length=1, max_length=500)]
    kind: Literal["immediate", "executable"]
    author: Author
    project: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    origin_task_id: UUID | None = None
    silent: bool = False
    rerunnable: bool = True
    # None, not 3600, in the model: the domain gives an executable task the default and
    # refuses a timeout on an immediate one, which a filled-in default would trip over.
    timeout_seconds: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_SECONDS)] | None = Field(
        default=None,
        description=f"The hard timeout of an executable task, from its start; "
        f"{DEFAULT_TIMEOUT_SECONDS} when omitted. An immediate task has none "
        "(giving one is `422`).",
        json_schema_extra={"default": DEFAULT_TIMEOUT_SECONDS},
    )
    labels: Annotated[
        dict[
            Annotated[str, Field(min_length=1, max_length=100)],
            Annotated[str, Field(max_length=500)],
        ],
        Field(max_length=inputs.MAX_LABELS),
    ] = {}
    jobs: Annotated[list[JobCreate], Field(max_length=MAX_JOBS)] = []


class TransitionItem(Request):
    job: Key | None = None
    step: Key | None = None
    status: Status
    at: UtcDatetime | None = None
    error: ErrorDetail | None = None
    retry_at: UtcDatetime | None = None

    def to_transition(self) -> Transition:
        """The domain's transition this item asks for."""
        return Transition(
            status=self.status,
            job=self.job,
            step=self.step,
            at=self.at,
            error=self.error.model_dump() if self.error else None,
            retry_at=self.retry_at,
        )


class TransitionsRequest(Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "transitions": [
                        {"status": "queued"},
                        {"job": "build", "step": "clone", "status": "in_progress"},
                        {"job": "build", "step": "clone", "status": "done"},
                    ],
                    "expected_version": 1,
                }
            ]
        },
    )

    transitions: Annotated[list[TransitionItem], Field(min_length=1, max_length=1000)]
    expected_version: Annotated[int, Field(ge=0, le=MAX_VERSION)] | None = None


class CancelRequest(Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "Deployed the wrong branch"}]}
    )

    reason: Annotated[str, Field(max_length=1000)] | None = None


class RerunRequest(Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"force": False, "author": {"id": "u-42", "name": "Alice", "kind": "user"}}
            ]
        }
    )

    force: bool = False
    author: Author


# ---------------------------------------------------------------- tasks: responses


class StepPublic(Response):
    key: str
    name: str
    status: Status
    system: bool
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    error: dict[str, Any] | None
    downgraded: bool
    log_chunks: int | None = Field(
        default=None,
        description="Chunks in the step's log now (GET of the current task only; else null).",
    )
    log_bytes: int | None = Field(default=None, description="Bytes in the step's log now.")
    log_refused_bytes: int | None = Field(
        default=None, description="Bytes refused past the per-step log cap (see LogTruncated)."
    )


class JobPublic(Response):
    key: str
    name: str
    needs: list[str]
    status: Status
    system: bool
    attempt: int
    retry_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    error: dict[str, Any] | None
    reason: str | None = Field(
        default=None, description="Why the job ended without running to completion."
    )
    steps: list[StepPublic]


class Failure(Response):
    reason: Literal["job", "system", "timeout"]
    message: str
    job: str | None = None
    step: str | None = None
    error: dict[str, Any] | None = None


class TaskSummary(Response):
    id: UUID
    org: str
    type: str
    title: str
    kind: Literal["immediate", "executable"]
    status: Status
    author: dict[str, Any]
    project: str | None
    origin_task_id: UUID | None
    rerun_of: UUID | None
    reruns: list[UUID]
    forced: bool
    silent: bool
    rerunnable: bool
    timeout_seconds: int | None
    labels: dict[str, str]
    cancel_requested: bool
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    failure: Failure | None
    version: int
    position: int | None = Field(
        description="Global position of the task's latest event (of the last event a write stored)."
    )


def _step_example(key: str, name: str, status: str, **times: Any) -> dict[str, Any]:
    never = {"started_at": None, "finished_at": None, "duration_seconds": None}
    return {
        "key": key, "name": name, "status": status, "system": False, **never, **times,
        "error": None, "downgraded": False,
        "log_chunks": None, "log_bytes": None, "log_refused_bytes": None,
    }  # fmt: skip


# A task as a write answers it: build running (clone done, compile started), deploy waiting.
# Shown on the task routes' answers (a schema-level example would lose its nulls: FastAPI
# writes the document without them, and only the routes' examples are put back).
TASK_EXAMPLE: dict[str, Any] = {
    "id": "0f7c2a4e-5b1d-4c8e-9a36-2d4b8e1f6c90",
    "org": "acme",
    "type": "app.deploy",
    "title": "Deploy shop to production",
    "kind": "executable",
    "status": "in_progress",
    "author": {"id": "u-42", "name": "Alice", "kind": "user"},
    "project": "shop",
    "origin_task_id": None,
    "rerun_of": None,
    "reruns": [],
    "forced": False,
    "silent": False,
    "rerunnable": True,
    "timeout_seconds": 3600,
    "labels": {"app": "shop", "env": "prod"},
    "cancel_requested": False,
    "created_at": "2026-11-28T10:00:00Z",
    "queued_at": "2026-11-28T10:00:05Z",
    "started_at": "2026-11-28T10:00:07Z",
    "finished_at": None,
    "duration_seconds": 25.0,
    "failure": None,
    "version": 5,
    "position": 1842,
    "jobs": [
        {
            "key": "build", "name": "Build image", "needs": [], "status": "in_progress",
            "system": False, "attempt": 1, "retry_at": None,
            "started_at": "2026-11-28T10:00:07Z", "finished_at": None,
            "duration_seconds": 25.0, "error": None, "reason": None,
            "steps": [
                _step_example("clone", "Clone", "done", started_at="2026-11-28T10:00:07Z",
                              finished_at="2026-11-28T10:00:19Z", duration_seconds=12.0),
                _step_example("compile", "Compile", "in_progress",
                              started_at="2026-11-28T10:00:19Z", duration_seconds=13.0),
            ],
        },
        {
            "key": "deploy", "name": "Deploy", "needs": ["build"], "status": "pending",
            "system": False, "attempt": 0, "retry_at": None, "started_at": None,
            "finished_at": None, "duration_seconds": None, "error": None, "reason": None,
            "steps": [_step_example("rollout", "Roll out", "pending")],
        },
    ],
}  # fmt: skip


class TaskPublic(TaskSummary):
    jobs: list[JobPublic]


def hash_field() -> Any:
    return Field(
        default=None,
        description="Hex SHA-256 over the canonical JSON of task_id, version, type, recorded_at, "
        "actor, data and prev_hash (http-api.md § Integrity); null for events not chained.",
    )


def prev_hash_field() -> Any:
    return Field(
        default=None,
        description="The hash of the task's event before this one; 64 zeros for its first event.",
    )


def redacted_field() -> Any:
    return Field(
        default=False,
        description="True when system work was left out of `data` for this reader: the hash "
        "covers more than is shown, so only an auditor's copy recomputes to it.",
    )


class TimelineEvent(Response):
    position: int
    task_id: UUID
    version: int
    type: str
    recorded_at: datetime
    occurred_at: datetime
    actor: Actor
    data: dict[str, Any]
    prev_hash: str | None = prev_hash_field()
    hash: str | None = hash_field()
    redacted: bool = redacted_field()


class TimelinePage(Response):
    events: list[TimelineEvent]
    next_after_version: int | None


class GraphNode(Response):
    key: str
    name: str
    status: Status
    system: bool


class GraphEdge(Response):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", serialization_alias="from")
    to: str


class Graph(Response):
    nodes: list[GraphNode]
    edges: list[GraphEdge]


# ---------------------------------------------------------------- api keys


class ApiKeyCreate(Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"org": "acme", "role": "writer", "name": "ci"}]}
    )

    org: Annotated[str, Field(pattern=r"^(\*|[a-z0-9][a-z0-9-]{0,62})$")]
    role: Literal["reader", "writer", "auditor", "admin"]
    name: Name


class ApiKeyPublic(Response):
    id: UUID
    org: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyPublic):
    token: str | None = Field(
        description="The bearer token: shown only in the answer that created the key."
    )
    position: int | None = None


class ApiKeyList(Response):
    items: list[ApiKeyPublic]


# ---------------------------------------------------------------- errors


class ProblemItem(BaseModel):
    loc: list[str | int]
    msg: str


TRANSITION_REFUSED_EXAMPLE: dict[str, Any] = {
    "type": "about:blank",
    "title": "Transition refused",
    "status": 409,
    "detail": "transition 0 (step rollout of job deploy → in_progress): step rollout cannot "
    "start yet: job deploy needs build (in progress)",
    "index": 0,
    "target": {"job": "deploy", "step": "rollout"},
    "current_status": "pending",
    "requested_status": "in_progress",
    "reason": "step rollout cannot start yet: job deploy needs build (in progress)",
}
NOT_FOUND_EXAMPLE = {
    "type": "about:blank",
    "title": "Not found",
    "status": 404,
    "detail": "no such task",
}
INVALID_REQUEST_EXAMPLE: dict[str, Any] = {
    "type": "about:blank",
    "title": "Invalid request",
    "status": 422,
    "detail": "invalid fields: body.title",
    "errors": [{"loc": ["body", "title"], "msg": "String should have at least 1 character"}],
}


class Problem(BaseModel):
    """An RFC 9457 problem document; each extension member is there only where it applies."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [TRANSITION_REFUSED_EXAMPLE, INVALID_REQUEST_EXAMPLE]}
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[ProblemItem] | None = Field(
        default=None, description="`422`: each invalid field or parameter, where and why."
    )
    index: int | None = Field(
        default=None,
        description="The place in the request's `transitions` of the one refused (`409`) or "
        "naming an unknown job or step (`422`).",
    )
    target: dict[str, Any] | None = Field(
        default=None,
        description='`409` refused transition: its target, `{"job", "step"}` (null '
        "members target the task or the job).",
    )
    current_status: str | None = Field(
        default=None, description="`409`: the status the target (or API key) has now."
    )
    requested_status: str | None = Field(
        default=None, description="`409` refused transition: the status it asked for."
    )
    reason: str | None = Field(
        default=None, description="`409` refused transition: why it was refused."
    )
