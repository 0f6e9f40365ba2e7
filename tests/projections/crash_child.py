"""A runner in a process of its own, for the crash tests to SIGKILL at random moments.

    python -m tests.projections.crash_child URL MODE BATCH_SIZE PAUSE

MODE `exactly-once` applies batches as production does (rows and position in one
transaction), for every projection, pausing PAUSE seconds after each commit.
MODE `split-commit` is the deliberately broken control: the task list's rows are
committed, then (PAUSE seconds later) its position, in a second transaction, so a
kill in between makes the restarted runner apply the batch again.

The process prints `ready` once it starts working, and exits 0 when it has caught
up with the store.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from eventsourcing.persistence import Tracking

from domain.application import TaskLedger
from projections.batched import BatchedProjection
from projections.runner import apply_next_batch
from projections.runtime import Projections
from store.config import StoreConfig


def split_commit_batch(
    app: Any, projection: BatchedProjection[Any], position: int, size: int, pause: float
) -> int:
    """The broken variant: the rows in one transaction, the position in another."""
    notifications = app.recorder.select_notifications(
        start=position, limit=size, inclusive_of_start=False
    )
    if not notifications:
        return position
    events = projection.events(notifications, app.mapper)
    view = projection.view
    with view._transaction() as cursor:
        writer = view.writer(cursor, list({e.originator_id for e, _ in events}))
        for event, event_position in events:
            projection.apply(event, event_position, writer)
        writer.flush()
    time.sleep(pause)
    view.insert_tracking(Tracking(app.name, notifications[-1].id))
    return int(notifications[-1].id)


def main(url: str, mode: str, batch_size: int, pause: float) -> int:
    store = StoreConfig.from_url(url)
    ledger = TaskLedger(store.env("tasks"))
    projections = Projections(store, ledger)
    names = list(projections.projections) if mode == "exactly-once" else ["task_list"]
    chosen = [projections.projections[name] for name in names]
    positions = {p.name: p.view.max_tracking_id(ledger.name) or 0 for p in chosen}
    print("ready", flush=True)
    while True:
        head = ledger.recorder.max_notification_id() or 0
        if all(positions[p.name] >= head for p in chosen):
            break
        for projection in chosen:
            if mode == "exactly-once":
                applied = apply_next_batch(
                    ledger, projection, positions[projection.name], batch_size
                )
                positions[projection.name] = applied.position
                time.sleep(pause)
            else:
                positions[projection.name] = split_commit_batch(
                    ledger, projection, positions[projection.name], batch_size, pause
                )
    projections.close()
    ledger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
