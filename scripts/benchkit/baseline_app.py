"""The ingest baseline: a minimal FastAPI app (uvicorn, 1 worker) whose POST validates
a transitions body and stores it with one INSERT and one commit.

    BENCH_BASELINE_DSN="host=... dbname=... options=-csearch_path=SCHEMA"   (PostgreSQL)
    BENCH_BASELINE_SQLITE=/tmp/x.sqlite                                     (SQLite)
    uvicorn benchkit.baseline_app:app

PostgreSQL goes through a psycopg async pool (2 to 10 connections, like the service's
pool); SQLite through one connection per worker thread, in WAL mode like the service's
store. What tasktrail adds on top of this (auth, loading the task, its rules, events,
the table lock, projections) is what the ratio measures.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from fastapi import FastAPI
from pydantic import BaseModel, Field

DSN = os.environ.get("BENCH_BASELINE_DSN", "")
SQLITE_PATH = os.environ.get("BENCH_BASELINE_SQLITE", "")
TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS baseline_events (id {serial} PRIMARY KEY, "
    "task_id TEXT NOT NULL, body TEXT NOT NULL, recorded_at TEXT NOT NULL DEFAULT {now})"
)


class Transition(BaseModel):
    job: str | None = Field(default=None, max_length=200)
    step: str | None = Field(default=None, max_length=200)
    status: str = Field(max_length=40)


class Transitions(BaseModel):
    transitions: list[Transition] = Field(min_length=1, max_length=1000)
    expected_version: int | None = None


state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if DSN:
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(DSN, min_size=2, max_size=10, open=False)
        await pool.open(wait=True)
        async with pool.connection() as conn:
            await conn.execute(TABLE_DDL.format(serial="BIGSERIAL", now="now()"))
        state["pool"] = pool
        try:
            yield
        finally:
            await pool.close()
    else:
        setup = sqlite3.connect(SQLITE_PATH)
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute(TABLE_DDL.format(serial="INTEGER", now="CURRENT_TIMESTAMP"))
        setup.commit()
        setup.close()
        state["local"] = threading.local()
        yield


app = FastAPI(lifespan=lifespan)


def _sqlite() -> sqlite3.Connection:
    local = state["local"]
    if not hasattr(local, "conn"):
        local.conn = sqlite3.connect(SQLITE_PATH, timeout=10, check_same_thread=False)
    return local.conn  # type: ignore[no-any-return]


if DSN:

    @app.post("/v1/tasks/{task_id}/transitions")
    async def report(task_id: UUID, body: Transitions) -> dict[str, Any]:
        async with state["pool"].connection() as conn:  # commits when the block ends
            cursor = await conn.execute(
                "INSERT INTO baseline_events (task_id, body) VALUES (%s, %s) RETURNING id",
                (str(task_id), body.model_dump_json()),
            )
            row = await cursor.fetchone()
        return {"id": str(task_id), "position": row[0]}

else:

    @app.post("/v1/tasks/{task_id}/transitions")
    def report_sqlite(task_id: UUID, body: Transitions) -> dict[str, Any]:
        conn = _sqlite()
        with conn:  # one transaction, committed
            cursor = conn.execute(
                "INSERT INTO baseline_events (task_id, body) VALUES (?, ?)",
                (str(task_id), json.dumps(body.model_dump())),
            )
        return {"id": str(task_id), "position": cursor.lastrowid}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
