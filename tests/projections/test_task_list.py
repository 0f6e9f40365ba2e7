"""The task list: rows equal the tasks they summarise; every filter; pages; origin links."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import Tracking

from domain.task import Task
from projections.task_list import Cursor, InvalidCursorError, TaskQuery, summary
from tests.projections.conftest import World
from tests.projections.history import ALICE, WODBOT, History, create, scripted_history

SUMMARY_FIELDS = (
    "id", "org", "type", "title", "kind", "status", "author", "project", "origin_task_id",
    "rerun_of", "forced", "silent", "rerunnable", "timeout_seconds", "labels",
    "cancel_requested", "created_at", "queued_at", "started_at", "finished_at", "failure",
    "version", "duration_seconds",
)  # fmt: skip


def all_pages(world: World, query: TaskQuery) -> list[UUID]:
    """Every task of the query, page after page, following `next_cursor`."""
    ids: list[UUID] = []
    while True:
        page = world.projections.task_list.list_tasks(query)
        ids.extend(row["id"] for row in page.rows)
        if page.next_cursor is None:
            return ids
        query = replace(query, after=Cursor.decode(page.next_cursor))


def matches(task: dict[str, Any], q: TaskQuery) -> bool:
    """The contract's filters, written plainly: the reference the SQL is checked against."""
    return (
        task["org"] == q.org
        and (q.include_silent or not task["silent"])
        and q.project in (None, task["project"])
        and (not q.statuses or task["status"] in q.statuses)
        and q.type in (None, task["type"])
        and q.kind in (None, task["kind"])
        and q.author_id in (None, task["author"]["id"])
        and q.author_kind in (None, task["author"]["kind"])
        and q.origin_task_id in (None, task["origin_task_id"])
        and q.rerun_of in (None, task["rerun_of"])
        and all(task["labels"].get(k) == v for k, v in q.labels)
        and (q.created_after is None or task["created_at"] > q.created_after)
        and (q.created_before is None or task["created_at"] < q.created_before)
    )


def expected(tasks: list[dict[str, Any]], q: TaskQuery) -> list[UUID]:
    chosen = sorted(
        (t for t in tasks if matches(t, q)), key=lambda t: (t["created_at"], t["id"]), reverse=True
    )
    return [t["id"] for t in chosen]


@pytest.fixture
def scripted(world: World) -> tuple[History, list[dict[str, Any]]]:
    history = scripted_history(world.ledger, tasks=110, seed=3, clock=world.clock)
    world.sync()
    return history, [world.ledger.get_task(i) for i in history.tasks]


def test_every_row_holds_the_summary_of_its_task(world: World, scripted: Any) -> None:
    _history, tasks = scripted
    now = world.clock()  # the moment the tasks were read: durations agree
    for task in tasks:
        row = world.projections.task_list.get(task["id"], task["org"])
        assert row is not None
        shown = summary(row, now)
        assert {f: shown[f] for f in SUMMARY_FIELDS} == {f: task[f] for f in SUMMARY_FIELDS}
        assert shown["reruns"] == [str(r) for r in task["reruns"]]
        # Exactly once: every event of the task counted once.
        assert row["events_applied"] == row["version"]


def filter_values(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """One telling value per filter, taken from the data (so no filter is trivially empty)."""
    acme = [t for t in tasks if t["org"] == "acme"]
    created = sorted(t["created_at"] for t in acme)
    origin = next(t["origin_task_id"] for t in acme if t["origin_task_id"])
    rerun_of = next(t["rerun_of"] for t in acme if t["rerun_of"])
    return {
        "project": "shop",
        "statuses": ("failed", "canceled"),
        "type": "app.deploy",
        "kind": "executable",
        "author_id": ALICE["id"],
        "author_kind": WODBOT["kind"],
        "origin_task_id": origin,
        "rerun_of": rerun_of,
        "labels": (("app", "shop"), ("env", "prod")),
        "created_after": created[len(created) // 4],
        "created_before": created[3 * len(created) // 4],
        "include_silent": True,
    }


def test_every_filter_and_every_pair_of_filters(world: World, scripted: Any) -> None:
    _history, tasks = scripted
    values = filter_values(tasks)
    queries = [TaskQuery(org="acme", limit=7), TaskQuery(org="evil", limit=7)]
    queries += [TaskQuery(org="acme", limit=7, **{name: v}) for name, v in values.items()]
    queries += [
        TaskQuery(org="acme", limit=7, **{a: values[a], b: values[b]})
        for a, b in itertools.combinations(values, 2)
    ]
    queries += [
        TaskQuery(org="acme", statuses=("done",), labels=(("app", "blog"),), project="shop"),
        TaskQuery(org="acme", statuses=("pending", "failed", "done"), kind="executable",
                  author_kind="user", include_silent=True, limit=3),
        TaskQuery(org="acme", labels=(("app", "shop"), ("app", "blog"))),  # never both
        TaskQuery(org="acme", type="app.build", created_after=values["created_after"],
                  created_before=values["created_before"], include_silent=True, limit=2),
        TaskQuery(org="nobody"),
    ]  # fmt: skip
    non_empty = 0
    for query in queries:
        want = expected(tasks, query)
        assert all_pages(world, query) == want, query
        non_empty += bool(want)
    assert non_empty > len(queries) * 2 // 3  # the filters were put to work


def test_silent_tasks_are_left_out_unless_asked_for(world: World) -> None:
    history = History()
    loud = create(world.ledger, history)
    world.clock.tick()
    quiet = create(world.ledger, history, silent=True)
    world.sync()
    feed = world.projections.task_list
    assert [r["id"] for r in feed.list_tasks(TaskQuery(org="acme")).rows] == [loud]
    everything = feed.list_tasks(TaskQuery(org="acme", include_silent=True)).rows
    assert [r["id"] for r in everything] == [quiet, loud]
    # Origin links are not the activity feed: silent tasks are part of them.
    child = create(world.ledger, history, origin_task_id=quiet, silent=True)
    world.sync()
    assert [r["id"] for r in feed.origin_chain(child, "acme")] == [quiet, child]


def test_pages_are_complete_without_duplicates_and_stable_while_tasks_arrive(
    world: World,
) -> None:
    history = History()
    for n in range(60):
        if n % 3:  # every third task shares its created_at with the one before
            world.clock.tick(0.5)
        create(world.ledger, history, kind="immediate", type="project.member.add")
    world.sync()
    newest_first = sorted(
        history.tasks,
        key=lambda i: (world.ledger.get_task(i)["created_at"], i),
        reverse=True,
    )
    # Read two pages...
    view, seen = world.projections.task_list, []
    page = view.list_tasks(TaskQuery(org="acme", limit=7))
    seen += [r["id"] for r in page.rows]
    page = view.list_tasks(
        TaskQuery(org="acme", limit=7, after=Cursor.decode(page.next_cursor or ""))
    )
    seen += [r["id"] for r in page.rows]
    # ...then new tasks arrive (newer ones, and one created in the same instant)...
    for _ in range(10):
        world.clock.tick(1)
        create(world.ledger, history, kind="immediate", type="project.member.add")
    create(world.ledger, history, kind="immediate", type="project.member.add")
    world.sync()
    # ...and the rest of the pages go on exactly where they were.
    while page.next_cursor is not None:
        page = view.list_tasks(
            TaskQuery(org="acme", limit=7, after=Cursor.decode(page.next_cursor))
        )
        seen += [r["id"] for r in page.rows]
    assert seen == newest_first
    # The new tasks are on a fresh first page.
    first = view.list_tasks(TaskQuery(org="acme", limit=11)).rows
    assert {r["id"] for r in first} == set(history.tasks[60:])


def test_a_page_is_at_most_500_tasks(world: World) -> None:
    # More tasks than one page holds. The page size is the view's, whoever wrote the
    # rows: their creations go to the projection as one batch, as a runner applies them
    # (storing 520 commands one by one would cost seconds on PostgreSQL).
    tasks = [
        Task.create(
            task_id=uuid4(),
            org="acme",
            type="project.member.add",
            title=f"Add member {n}",
            kind="immediate",
            author=ALICE,
            now=world.clock.tick(),
        )
        for n in range(520)
    ]
    created = [(task.collect_events()[0], position) for position, task in enumerate(tasks, 1)]
    world.projections.projections["task_list"].process_batch(
        created, tracking=Tracking(world.ledger.name, len(created)), expected=0
    )
    view = world.projections.task_list
    # Asking for more than 500 gets 500, and a cursor to the rest...
    page = view.list_tasks(TaskQuery(org="acme", limit=10_000))
    assert len(page.rows) == 500 and page.next_cursor is not None
    rest = view.list_tasks(
        TaskQuery(org="acme", limit=10_000, after=Cursor.decode(page.next_cursor))
    )
    assert len(rest.rows) == 20 and rest.next_cursor is None
    # ...and the two pages hold every task once, newest first.
    newest_first = [task.id for task in reversed(tasks)]
    assert [r["id"] for r in page.rows + rest.rows] == newest_first


def _raw(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


ONE = str(UUID(int=1))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope!",
        _raw({"x": 1}),
        _raw(["v2", "2026-01-01T00:00:00+00:00", ONE]),
        _raw(["v1", "yesterday", ONE]),
        _raw(["v1", "2026-01-01T00:00:00", ONE]),  # no timezone
        _raw(["v1", "2026-01-01T00:00:00+00:00", "not-a-uuid"]),
    ],
)
def test_a_cursor_not_handed_out_by_the_list_is_refused(text: str) -> None:
    with pytest.raises(InvalidCursorError):
        Cursor.decode(text)


def tree(world: World) -> dict[str, UUID]:
    """root → a → a1 → a1x (four levels), root → b (with b1, b2), and one task elsewhere."""
    history, ids = History(), dict[str, UUID]()

    def make(name: str, origin: str | None = None, **fields: Any) -> None:
        world.clock.tick()
        ids[name] = create(
            world.ledger, history, title=name, origin_task_id=ids.get(origin or ""), **fields
        )

    make("root")
    make("a", "root")
    make("b", "root", kind="immediate", type="project.member.add")
    make("a1", "a")
    make("b1", "b")
    make("b2", "b", silent=True)
    make("a1x", "a1")
    make("alone")
    make("evil", org="evil")
    world.sync()
    return ids


def titles(rows: list[dict[str, Any]]) -> list[str]:
    return [row["title"] for row in rows]


def test_origin_chain_runs_from_the_root_down_to_the_task(world: World) -> None:
    ids = tree(world)
    view = world.projections.task_list
    assert titles(view.origin_chain(ids["a1x"], "acme")) == ["root", "a", "a1", "a1x"]
    assert titles(view.origin_chain(ids["b2"], "acme")) == ["root", "b", "b2"]
    assert titles(view.origin_chain(ids["root"], "acme")) == ["root"]
    # Another org's task has no chain here.
    assert view.origin_chain(ids["evil"], "acme") == []


def test_caused_lists_the_children_or_the_whole_tree_with_its_branches(world: World) -> None:
    ids = tree(world)
    view = world.projections.task_list
    assert titles(view.caused(ids["root"], "acme", all_levels=False)) == ["a", "b"]
    assert titles(view.caused(ids["root"], "acme", all_levels=True)) == [
        "a", "b", "a1", "b1", "b2", "a1x",
    ]  # fmt: skip
    assert titles(view.caused(ids["b"], "acme", all_levels=True)) == ["b1", "b2"]
    assert view.caused(ids["alone"], "acme", all_levels=True) == []
    assert view.caused(ids["root"], "evil", all_levels=True) == []


def test_a_rerun_is_caused_by_the_origin_of_the_task_it_reruns(world: World) -> None:
    ids = tree(world)
    failed = ids["a1x"]
    world.ledger.cancel(failed, "stop")
    rerun = world.ledger.rerun(failed, author=ALICE).task["id"]
    world.sync()
    view = world.projections.task_list
    assert titles(view.origin_chain(rerun, "acme")) == ["root", "a", "a1", "a1x"]
    assert [r["id"] for r in view.caused(ids["a1"], "acme", all_levels=False)] == [failed, rerun]
    assert view.get(failed, "acme")["reruns"] == [str(rerun)]  # type: ignore[index]
    assert view.get(rerun, "acme")["rerun_of"] == failed  # type: ignore[index]
    assert view.list_tasks(TaskQuery(org="acme", rerun_of=failed)).rows[0]["id"] == rerun


def test_created_filters_are_strict_bounds(world: World) -> None:
    history = History()
    for _ in range(3):
        world.clock.tick(60)
        create(world.ledger, history, kind="immediate", type="project.member.add")
    world.sync()
    middle = world.ledger.get_task(history.tasks[1])["created_at"]
    view = world.projections.task_list
    after = view.list_tasks(TaskQuery(org="acme", created_after=middle)).rows
    before = view.list_tasks(TaskQuery(org="acme", created_before=middle)).rows
    both = view.list_tasks(
        TaskQuery(
            org="acme",
            created_after=middle - timedelta(seconds=1),
            created_before=middle + timedelta(seconds=1),
        )
    ).rows
    assert [r["id"] for r in after] == [history.tasks[2]]
    assert [r["id"] for r in before] == [history.tasks[0]]
    assert [r["id"] for r in both] == [history.tasks[1]]
