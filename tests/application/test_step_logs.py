"""Step logs on every store: append, read, download, caps, keys, concurrency, isolation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.application import TaskLedger
from domain.errors import ConflictError, InvalidRequestError
from domain.idempotency import IdempotentRequest
from domain.log_application import MAX_READ_BATCH, StepLogs
from domain.logs import LogChunkAppended, LoggedStep, LogTruncated, StepLog, log_stream_id
from store.config import StoreConfig

MULTILINGUAL = [
    "Clonage du dépôt… réussi ✓\n",
    "编译中 第 1/3 步\n",
    "🚀 déployé 🎉 (emoji with ZWJ: 👩‍💻)\n",
    "tabs\tand\r\nCRLF and \x1b[31mANSI\x1b[0m and U+2028 \u2028 end\n",
]


@pytest.fixture
def logs(store_url: str) -> Iterator[StepLogs]:
    app = StepLogs(StoreConfig.from_url(store_url).env("logs"))
    try:
        yield app
    finally:
        app.close()


def running(task_id: UUID | None = None, job: str = "build", step: str = "clone") -> LoggedStep:
    return LoggedStep(task_id or uuid4(), job, step, "in_progress", has_run=True)


def test_text_round_trips_exactly_in_chunks_pages_and_download(logs: StepLogs) -> None:
    step = running()
    answers = [logs.append(step, text) for text in MULTILINGUAL]
    assert [a.seq for a in answers] == [1, 2, 3, 4]
    assert [a.size for a in answers] == [len(t.encode()) for t in MULTILINGUAL]
    page = logs.page(step.task_id, "build", "clone")
    assert [c.text for c in page.chunks] == MULTILINGUAL
    assert [c.seq for c in page.chunks] == [1, 2, 3, 4]
    assert page.next_after == 4 and not page.more
    totals, text = logs.text(step.task_id, "build", "clone")
    assert "".join(text) == "".join(MULTILINGUAL)
    assert totals.bytes == len("".join(MULTILINGUAL).encode()) and totals.chunks == 4


def test_pages_resume_after_a_seq(logs: StepLogs) -> None:
    step = running()
    for n in range(7):
        logs.append(step, f"line {n}\n")
    first = logs.page(step.task_id, "build", "clone", limit=3)
    assert [c.seq for c in first.chunks] == [1, 2, 3] and first.more
    second = logs.page(step.task_id, "build", "clone", after=first.next_after, limit=3)
    assert [c.text for c in second.chunks] == ["line 3\n", "line 4\n", "line 5\n"]
    last = logs.page(step.task_id, "build", "clone", after=second.next_after, limit=3)
    assert [c.seq for c in last.chunks] == [7] and not last.more
    assert logs.page(step.task_id, "build", "clone", after=7).chunks == []
    _, tail = logs.text(step.task_id, "build", "clone", after=5)
    assert "".join(tail) == "line 5\nline 6\n"


def test_a_page_stops_near_its_byte_budget_but_holds_at_least_one_chunk(logs: StepLogs) -> None:
    step = running()
    for _ in range(3):
        logs.append(step, "x" * 1000)
    page = logs.page(step.task_id, "build", "clone", max_bytes=1500)
    assert [c.seq for c in page.chunks] == [1, 2] and page.more
    single = logs.page(step.task_id, "build", "clone", max_bytes=10)
    assert [c.seq for c in single.chunks] == [1]


def test_a_step_that_never_ran_refuses_logs(logs: StepLogs) -> None:
    never = LoggedStep(uuid4(), "deploy", "rollout", "pending", has_run=False)
    with pytest.raises(ConflictError, match="has not started"):
        logs.append(never, "too early\n")
    assert logs.totals(never.task_id, "deploy", "rollout").seq == 0


@pytest.mark.parametrize("text", ["", "a\x00b"])
def test_empty_chunks_and_nul_characters_are_refused(logs: StepLogs, text: str) -> None:
    with pytest.raises(InvalidRequestError):
        logs.append(running(), text)


def test_a_chunk_whose_json_is_six_times_its_size_is_stored_without_hanging(
    logs: StepLogs,
) -> None:
    # 1 MiB of control characters is 6 MiB of JSON (\u0001 each): a write that
    # psycopg's pipeline mode never finishes sending (see domain/postgres_recorder.py).
    step = running()
    text = "\x01" * (1024 * 1024)
    done: list[Any] = []
    writer = threading.Thread(target=lambda: done.append(logs.append(step, text)), daemon=True)
    writer.start()
    writer.join(timeout=60)
    assert not writer.is_alive(), "the write hung"
    assert done[0].size == len(text)
    _, read_back = logs.text(step.task_id, "build", "clone")
    assert "".join(read_back) == text


def test_a_finished_step_still_takes_late_logs(logs: StepLogs) -> None:
    done = LoggedStep(uuid4(), "build", "clone", "done", has_run=True)
    assert logs.append(done, "flushed after the step finished\n").seq == 1


def test_text_past_the_cap_is_refused_and_recorded_never_dropped_silently(
    store_url: str,
) -> None:
    with StepLogs(StoreConfig.from_url(store_url).env("logs"), max_bytes_per_step=10) as logs:
        step = running()
        assert logs.append(step, "12345678").size == 8
        # "é" is two bytes: only "é" fits in the two left; the cut never splits a character.
        over = logs.append(step, "ééé")
        assert (over.seq, over.size, over.refused_bytes) == (3, 2, 4)
        full = logs.append(step, "more")
        assert (full.seq, full.size, full.refused_bytes) == (4, 0, 4)
        page = logs.page(step.task_id, "build", "clone")
        assert [c.text for c in page.chunks] == ["12345678", "é"]
        assert [(t.seq, t.refused_bytes, t.cap_bytes) for t in page.truncations] == [
            (3, 4, 10),
            (4, 4, 10),
        ]
        totals = logs.totals(step.task_id, "build", "clone")
        assert (totals.chunks, totals.bytes, totals.refused_bytes) == (2, 10, 8)
        stored = list(logs.events.get(step.stream_id))
        assert [type(e) for e in stored] == [
            LogChunkAppended,
            LogChunkAppended,
            LogTruncated,
            LogTruncated,
        ]


def test_a_retried_keyed_append_gets_its_first_answer_and_stores_nothing(
    logs: StepLogs,
) -> None:
    step = running()
    request = IdempotentRequest(uuid4(), "hash-1", 201)
    first = logs.append(step, "once\n", request=request)
    again = logs.append(step, "once\n", request=request)
    assert (again.seq, again.size, again.refused_bytes) == (first.seq, first.size, 0)
    assert again.replayed and not first.replayed
    assert logs.totals(step.task_id, "build", "clone").chunks == 1
    answer = logs.find_answer(request.answer_id)
    assert answer is not None and answer.subject_version == first.seq


def test_keyed_appends_racing_on_one_key_store_one_chunk(logs: StepLogs) -> None:
    step = running()
    request = IdempotentRequest(uuid4(), "hash-race", 201)
    results: list[Any] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        results.append(logs.append(step, "exactly once\n", request=request))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 4
    assert {r.seq for r in results} == {1}
    assert logs.totals(step.task_id, "build", "clone").chunks == 1


def test_concurrent_writers_to_one_step_lose_nothing_and_seqs_stay_dense(
    logs: StepLogs,
) -> None:
    step = running()
    barrier = threading.Barrier(4)

    def write(writer: int) -> None:
        barrier.wait()
        for n in range(15):
            logs.append(step, f"w{writer}-{n}\n")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    page = logs.page(step.task_id, "build", "clone", limit=1000)
    assert [c.seq for c in page.chunks] == list(range(1, 61))
    assert sorted(c.text for c in page.chunks) == sorted(
        f"w{w}-{n}\n" for w in range(4) for n in range(15)
    )
    for writer in range(4):  # each writer's own chunks stay in its order
        mine = [c.text for c in page.chunks if c.text.startswith(f"w{writer}-")]
        assert mine == [f"w{writer}-{n}\n" for n in range(15)]


class SelectSpy:
    """Wraps a recorder's select_events, remembering each call and how many events it got."""

    def __init__(self, recorder: Any):
        self.recorder = recorder
        self.original = recorder.select_events
        self.calls: list[tuple[dict[str, Any], int]] = []

    def __enter__(self) -> SelectSpy:
        def select(*args: Any, **kwargs: Any) -> Any:
            rows = self.original(*args, **kwargs)
            self.calls.append((kwargs, len(rows)))
            return rows

        self.recorder.select_events = select
        return self

    def __exit__(self, *exc: object) -> None:
        self.recorder.select_events = self.original

    @property
    def events(self) -> int:
        return sum(count for _, count in self.calls)


def bulk_append(
    logs: StepLogs, step: LoggedStep, count: int, text: str = "line\n", after: int = 0
) -> None:
    """Appends `count` chunks in one write (fast on every store), through the domain's rules."""
    last = next(iter(logs.events.get(step.stream_id, desc=True, limit=1)), None) if after else None
    log = StepLog.following(step, last)  # type: ignore[arg-type]
    for _ in range(count):
        log.append(text, cap_bytes=logs.max_bytes_per_step, now=logs.clock())
    logs.save(*log.collect_events())


def test_an_append_reads_one_event_however_long_the_log(logs: StepLogs) -> None:
    step = running()
    bulk_append(logs, step, 2000)
    with SelectSpy(logs.recorder) as spy:
        assert logs.append(step, "one more\n").seq == 2001
        totals = logs.totals(step.task_id, "build", "clone")
    assert totals.chunks == 2001
    assert spy.events == 2  # the last event, once for the append and once for the totals
    assert all(kwargs.get("limit") == 1 and kwargs.get("desc") for kwargs, _ in spy.calls)
    # The next append starts from the head this process wrote: it reads nothing.
    with SelectSpy(logs.recorder) as spy:
        assert logs.append(step, "and another\n").seq == 2002
    assert spy.calls == []


def test_a_head_another_process_moved_on_costs_a_retry_never_a_lost_chunk(
    logs: StepLogs,
) -> None:
    step = running()
    logs.append(step, "ours 1\n")  # this process now remembers the head at seq 1
    bulk_append(logs, step, 2, "theirs\n", after=1)  # written behind its back
    assert logs.append(step, "ours 2\n").seq == 4
    page = logs.page(step.task_id, "build", "clone")
    assert [c.text for c in page.chunks] == ["ours 1\n", "theirs\n", "theirs\n", "ours 2\n"]
    assert logs.totals(step.task_id, "build", "clone").chunks == 4


def test_a_download_reads_the_store_in_bounded_batches(logs: StepLogs) -> None:
    step = running()
    bulk_append(logs, step, 3000, "0123456789abcdef\n")
    with SelectSpy(logs.recorder) as spy:
        totals, text = logs.text(step.task_id, "build", "clone")
        assert sum(len(part) for part in text) == totals.bytes == 3000 * 17
    batches = [count for _, count in spy.calls[1:]]
    assert sum(batches) == 3000 and max(batches) <= MAX_READ_BATCH


def test_logs_live_apart_from_the_task_streams(store_url: str, logs: StepLogs) -> None:
    ledger = TaskLedger(StoreConfig.from_url(store_url).env())
    try:
        created = ledger.create_task(
            org="acme",
            type="project.member.add",
            title="t",
            kind="immediate",
            author={"id": "u-1", "name": "A", "kind": "user"},
        )
        before = ledger.recorder.max_notification_id()
        logs.append(running(created.task["id"]), "apart\n")
        assert ledger.recorder.max_notification_id() == before
        assert list(ledger.events.get(log_stream_id(created.task["id"], "build", "clone"))) == []
        if store_url.startswith("postgres"):
            assert logs.recorder.events_table_name == "steplogs_events"
            assert ledger.recorder.events_table_name == "taskledger_events"
        if store_url.startswith("sqlite"):
            assert logs.env["SQLITE_DBNAME"].endswith(".logs.sqlite")
    finally:
        ledger.close()
