"""`tasktrail worker`, in a process of its own, for the crash tests to SIGKILL at random moments.

    TASKTRAIL_DATABASE_URL=... python -m tests.projections.crash_child MODE MARKERS [PAUSE]

The process runs the production entry point, `api.cli.main(["worker"])`: the
elected `BatchRunner` of every projection (started by `Projections.start()`), the
timeout enforcer and the checkpoint writer, until SIGTERM. It changes one thing:
every batch a view commits goes through a spy that appends to the MARKERS file

    start <view class> <position the batch starts from> <position it ends at>
    end <view class> <position it ends at>

before the batch opens its transaction and after it committed, so the parent can
tell a kill that landed inside a batch (a `start` without its `end`, and the view
still at the start position) from one between batches.

MODE `exactly-once` leaves the batch as production has it: rows and position in
one transaction. MODE `split-commit` is the deliberately broken control: the task list's rows
are committed, then (PAUSE seconds later) its position, in a second transaction,
so a kill in between makes the restarted runner apply the batch again.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from eventsourcing.persistence import Tracking

from api.cli import main as tasktrail
from projections.task_list import TaskListView
from projections.tracked_view import TrackedView

BatchMethod = Callable[..., AbstractContextManager[Any]]


def marking(batch: BatchMethod, markers: str) -> BatchMethod:
    """`batch` with a line in `markers` before it starts and after it committed."""
    fd = os.open(markers, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def mark(line: str) -> None:
        os.write(fd, f"{line}\n".encode())  # one write per line: the runners' lines never mix

    @contextmanager
    def marked(view: TrackedView, *, tracking: Tracking, expected: int | None, **kw: Any) -> Any:
        name, last = type(view).__name__, tracking.notification_id
        mark(f"start {name} {expected} {last}")
        with batch(view, tracking=tracking, expected=expected, **kw) as writer:
            yield writer
        mark(f"end {name} {last}")

    return marked


def split_commit(batch: BatchMethod, pause: float) -> BatchMethod:
    """The task list's batch broken: its rows in one transaction, its position in another."""

    @contextmanager
    def split(
        view: TrackedView, *, tracking: Tracking, expected: int | None, streams: Any = ()
    ) -> Iterator[Any]:
        if not isinstance(view, TaskListView):  # the other views stay exactly-once
            with batch(view, tracking=tracking, expected=expected, streams=streams) as writer:
                yield writer
            return
        with view._transaction() as cursor:
            view._claim(cursor, tracking.application_name, expected)
            writer = view.writer(cursor, streams)
            yield writer
            writer.flush()
        time.sleep(pause)  # a kill here loses the position, not the rows
        view.insert_tracking(tracking)  # type: ignore[attr-defined]
        view.progress.advance(tracking.notification_id)

    return split


def main(mode: str, markers: str, pause: float) -> int:
    batch: BatchMethod = TrackedView.batch
    if mode == "split-commit":
        batch = split_commit(batch, pause)
    elif mode != "exactly-once":
        raise SystemExit(f"unknown mode {mode!r}")
    TrackedView.batch = marking(batch, markers)  # type: ignore[method-assign,assignment]
    return tasktrail(["worker"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0))
