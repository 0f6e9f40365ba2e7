"""What a new task's own fields must look like (domain.md), checked when it is created.

The API's request schemas check the same rules first, so an HTTP caller still gets
the schema's 422; these keep every other way in honest (the ledger called from a
script or a test, a rerun naming its author). They run in `Task.create`, a command:
never when stored events are replayed, so a rule tightened later cannot make an old
stream unreadable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from domain.errors import FieldProblem, InvalidRequestError

# An org is a slug: lower-case letters, digits and dashes, at most 63 characters.
ORG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
TYPE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,99}$")
AUTHOR_FIELDS = ("id", "name", "kind")
AUTHOR_KINDS = ("user", "system", "support")
MAX_LABELS = 32


def validate_task_inputs(
    *, org: Any, task_type: Any, author: Any, labels: Mapping[Any, Any] | None
) -> None:
    """Refuses a new task whose org, type, author or labels break domain.md's rules."""
    problems = [
        *_org_problems(org),
        *_type_problems(task_type),
        *_author_problems(author),
        *_label_problems(labels or {}),
    ]
    if problems:
        raise InvalidRequestError(problems)


def _org_problems(org: Any) -> list[FieldProblem]:
    if isinstance(org, str) and ORG_PATTERN.fullmatch(org):
        return []
    return [FieldProblem(("org",), f"{org!r} is not an org slug ({ORG_PATTERN.pattern})")]


def _type_problems(task_type: Any) -> list[FieldProblem]:
    if isinstance(task_type, str) and TYPE_PATTERN.fullmatch(task_type):
        return []
    return [FieldProblem(("type",), f"{task_type!r} must match {TYPE_PATTERN.pattern}")]


def _author_problems(author: Any) -> list[FieldProblem]:
    if not isinstance(author, Mapping):
        return [FieldProblem(("author",), 'must be {"id", "name", "kind"}')]
    problems = [
        FieldProblem(("author", str(name)), "is not a field of an author")
        for name in author
        if name not in AUTHOR_FIELDS
    ]
    problems += [
        FieldProblem(("author", name), "must be a non-empty string")
        for name in ("id", "name")
        if not isinstance(author.get(name), str) or not author[name]
    ]
    if author.get("kind") not in AUTHOR_KINDS:
        kinds = ", ".join(AUTHOR_KINDS)
        problems.append(
            FieldProblem(("author", "kind"), f"{author.get('kind')!r} is not one of {kinds}")
        )
    return problems


def _label_problems(labels: Mapping[Any, Any]) -> list[FieldProblem]:
    if len(labels) > MAX_LABELS:
        return [FieldProblem(("labels",), f"at most {MAX_LABELS} labels, not {len(labels)}")]
    return [
        FieldProblem(("labels", str(key)), "labels map strings to strings")
        for key, value in labels.items()
        if not isinstance(key, str) or not isinstance(value, str)
    ]
