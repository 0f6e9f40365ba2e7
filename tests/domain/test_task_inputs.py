"""A new task's own fields follow domain.md, whoever creates it: org, type, author, labels.

The API's schemas refuse the same inputs first (tests/api/test_create_task.py); these
are the aggregate's own checks, for every other way a task is created.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from domain.errors import InvalidRequestError
from domain.inputs import MAX_LABELS
from domain.status import Status
from domain.task import Task
from tests.domain.builders import USER, at, executable, immediate, job, task_in_status

NEW_ID = UUID("00000000-0000-4000-8000-000000000002")

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("one-character type", {"type": "a"}),
    ("type with every allowed sign", {"type": "a_b.c:d-e9"}),
    ("type of 100 characters", {"type": "a" * 100}),
    ("one-character org", {"org": "a"}),
    ("org of 63 characters with dashes", {"org": "a-" * 31 + "z"}),
    ("org starting with a digit", {"org": "9acme"}),
    ("system author", {"author": {"id": "bot-1", "name": "Wodbot", "kind": "system"}}),
    ("support author", {"author": {"id": "s-1", "name": "Sam", "kind": "support"}}),
    ("32 labels", {"labels": {f"k{n}": "v" for n in range(MAX_LABELS)}}),
    ("empty label value", {"labels": {"env": ""}}),
]

REFUSED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("type with a space and capitals", {"type": "App Deploy"}, ("type",)),
    ("empty type", {"type": ""}, ("type",)),
    ("type starting with a dot", {"type": ".deploy"}, ("type",)),
    ("type of 101 characters", {"type": "a" * 101}, ("type",)),
    ("type with a slash", {"type": "app/deploy"}, ("type",)),
    ("type ending in a newline", {"type": "app.deploy\n"}, ("type",)),
    ("type that is no string", {"type": 7}, ("type",)),
    ("empty org", {"org": ""}, ("org",)),
    ("org with capitals", {"org": "Acme"}, ("org",)),
    ("org starting with a dash", {"org": "-acme"}, ("org",)),
    ("org with an underscore", {"org": "ac_me"}, ("org",)),
    ("org with a dot", {"org": "acme.io"}, ("org",)),
    ("org of 64 characters", {"org": "a" * 64}, ("org",)),
    ("the platform scope as an org", {"org": "*"}, ("org",)),
    ("author of an unknown kind", {"author": USER | {"kind": "robot"}}, ("author", "kind")),
    ("author of no kind", {"author": {"id": "u-1", "name": "Alice"}}, ("author", "kind")),
    ("api key as author", {"author": USER | {"kind": "api_key"}}, ("author", "kind")),
    ("author without an id", {"author": {"name": "Alice", "kind": "user"}}, ("author", "id")),
    ("author with an empty name", {"author": USER | {"name": ""}}, ("author", "name")),
    ("author that is no mapping", {"author": "alice"}, ("author",)),
    ("author with a field of its own", {"author": USER | {"email": "a@x"}}, ("author", "email")),
    ("33 labels", {"labels": {f"k{n}": "v" for n in range(MAX_LABELS + 1)}}, ("labels",)),
    ("label value that is no string", {"labels": {"replicas": 3}}, ("labels", "replicas")),
    ("label key that is no string", {"labels": {1: "one"}}, ("labels", "1")),
]


@pytest.mark.parametrize("build", [executable, immediate], ids=["executable", "immediate"])
@pytest.mark.parametrize("fields", [f for _, f in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_task_within_the_rules_is_created(build: Any, fields: dict[str, Any]) -> None:
    task = build(**fields)

    created = task.collect_events()
    assert [type(e).__name__ for e in created] == ["TaskCreated"]
    for name, value in fields.items():
        assert getattr(task, name) == value


@pytest.mark.parametrize("build", [executable, immediate], ids=["executable", "immediate"])
@pytest.mark.parametrize(
    ("fields", "loc"), [(f, loc) for _, f, loc in REFUSED], ids=[i for i, _, _ in REFUSED]
)
def test_task_breaking_a_rule_is_refused_at_its_field(
    build: Any, fields: dict[str, Any], loc: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        build(**fields)

    assert [p.loc for p in caught.value.problems] == [loc]
    assert str(caught.value).startswith(".".join(loc) + ":")


def test_every_broken_rule_is_named_at_once() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        executable(org="Acme", type="App Deploy", author={"kind": "robot"}, labels={"n": 1})

    assert [p.loc for p in caught.value.problems] == [
        ("org",),
        ("type",),
        ("author", "id"),
        ("author", "name"),
        ("author", "kind"),
        ("labels", "n"),
    ]


def test_rerun_by_an_author_of_an_unknown_kind_is_refused_and_records_nothing() -> None:
    task = task_in_status(Status.FAILED)

    with pytest.raises(InvalidRequestError) as caught:
        task.rerun(
            new_task_id=NEW_ID,
            author=USER | {"kind": "robot"},
            force=False,
            now=at(100),
        )

    assert [p.loc for p in caught.value.problems] == [("author", "kind")]
    assert task.reruns == [] and task.collect_events() == []


def test_task_recorded_before_a_rule_existed_still_replays() -> None:
    # The rules guard the command, not the event: a stored TaskCreated that today's
    # rules would refuse (here: 40 labels) is read back as it was recorded.
    valid = executable(job("a", "s"))
    created: Any = valid.collect_events()[0]
    too_many = {f"k{n}": "v" for n in range(40)}
    object.__setattr__(created, "labels", too_many)

    replayed: Task = created.mutate(None)

    assert replayed.labels == too_many
