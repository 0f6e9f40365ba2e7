"""`GET /v1/tasks` queries: each filter alone and three combinations, their pages, and
the plan the database picks for each (an index scan, never a full scan, is the aim)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import psycopg

from benchkit.dataset import NOW, ORG, Dataset
from projections.task_list import Cursor, TaskQuery

SINCE = NOW - timedelta(days=10)


@dataclass(frozen=True)
class ListQuery:
    name: str
    params: tuple[tuple[str, str], ...]  # the HTTP query (repeatable keys allowed)

    def path(self, limit: int, cursor: str | None = None) -> str:
        params = [*self.params, ("limit", str(limit))]
        if cursor:
            params.append(("cursor", cursor))
        return f"/v1/tasks?{urlencode(params)}"

    def task_query(self, limit: int, cursor: str | None) -> TaskQuery:
        """The same query as the route builds it, for EXPLAIN."""
        fields: dict[str, Any] = {"org": ORG, "limit": limit}
        statuses, labels = [], []
        for key, value in self.params:
            if key == "status":
                statuses.append(value)
            elif key == "label":
                k, _, v = value.partition(":")
                labels.append((k, v))
            elif key in ("origin_task_id", "rerun_of"):
                fields[key] = UUID(value)
            elif key in ("created_after", "created_before"):
                fields[key] = datetime.fromisoformat(value)
            elif key == "include_silent":
                fields[key] = value == "true"
            else:
                fields[key] = value
        fields["statuses"], fields["labels"] = tuple(statuses), tuple(labels)
        fields["after"] = Cursor.decode(cursor) if cursor else None
        return TaskQuery(**fields)


def catalogue(data: Dataset) -> list[ListQuery]:
    since = SINCE.isoformat()
    singles = [
        ("project", "shop"),
        ("status", "done"),
        ("type", "app.deploy"),
        ("kind", "executable"),
        ("author_id", "bot-ci"),
        ("author_kind", "system"),
        ("origin_task_id", str(data.wave)),
        ("rerun_of", str(data.flaky)),
        ("label", "env:prod"),
        ("created_after", since),
        ("created_before", since),
        ("include_silent", "true"),
    ]
    queries = [ListQuery(key, ((key, value),)) for key, value in singles]
    queries += [
        ListQuery("project+status", (("project", "shop"), ("status", "done"))),
        ListQuery("label+created_after", (("label", "env:prod"), ("created_after", since))),
        ListQuery(
            "type+author_kind+include_silent",
            (("type", "app.deploy"), ("author_kind", "system"), ("include_silent", "true")),
        ),
    ]
    return queries


def captured_sql(view: Any, query: TaskQuery) -> tuple[Any, list[Any]]:
    """The statement `list_tasks` sends for `query` (captured, not run)."""
    captured: list[tuple[str, list[Any]]] = []
    original = view._select

    def capture(text: str, params: Any) -> list[Any]:
        captured.append((text, list(params)))
        return []

    view._select = capture
    try:
        view.list_tasks(query)
    finally:
        view._select = original
    text, params = captured[0]
    return view.dialect.render(text), params


def explain(kind: str, view: Any, conn: Any, query: TaskQuery) -> dict[str, Any]:
    """The plan's top nodes, and whether any node reads the whole table.

    `conn` is a psycopg connection (PostgreSQL) or a sqlite3 one."""
    statement, params = captured_sql(view, query)
    if kind == "postgres":
        rows = conn.execute(psycopg.sql.SQL("EXPLAIN ") + statement, params).fetchall()
        lines = [r[0] for r in rows]
        nodes = [lines[0]] + [line.split("->", 1)[1] for line in lines[1:] if "->" in line]
        names = [n.split("  (")[0].strip() for n in nodes]
        full_scan = any("Seq Scan" in line for line in lines)
        sort = any(n.startswith(("Sort", "Incremental Sort")) for n in names)
        top = " → ".join(names[:2])
    else:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
        names = [r[3] for r in rows]
        full_scan = any(n.startswith("SCAN") and "USING" not in n for n in names)
        sort = any("TEMP B-TREE" in n for n in names)
        top = " / ".join(names[:2])
    return {"top": top, "full_scan": full_scan, "sort": sort, "plan": names}
