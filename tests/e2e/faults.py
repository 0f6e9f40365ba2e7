"""Support for the fault-injection tests (`tests/e2e/test_fault_*.py`).

- `ServeProcess`: a real `tasktrail serve` subprocess on a loopback port, started,
  killed (`SIGKILL`) and restarted on the same port; its output goes to a file, so a
  chatty server never blocks on a full pipe.
- `Writers`: client threads that drive tasks through their life (create, then each
  step `in_progress` and `done`), every write with its own `Idempotency-Key`, retried
  with that key until the server answers it (a dropped connection, a `503`, a `409`
  "in flight"), recording what was acknowledged, every answer's status and time.
- `check_exactly_once`: reads back through the API that every acknowledged write is
  stored exactly once.
- `PrivateCluster`: a PostgreSQL cluster of the test's own (initdb + pg_ctl from the
  PATH, as the `postgres` user when we are root), on a free port, removed afterwards:
  the tests that stop PostgreSQL never touch a shared server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg

from tests.e2e.test_serve_postgres import ADMIN, free_port

PROBLEM = "application/problem+json"
CRASH_SIGNS = ('"message": "unexpected error"', "Exception in ASGI application")
AUTHOR = {"id": "u-fault", "name": "Fault injector", "kind": "user"}
JOBS = 3
STEPS = 2
# Each task: one create, then every step of every job `in_progress` and `done`.
WRITES_PER_TASK = 1 + JOBS * STEPS * 2
ORG = "acme"


# ---------------------------------------------------------------------- the server


class ServeProcess:
    """`tasktrail serve` in a subprocess, on one port for its whole life (restarts too)."""

    def __init__(self, database_url: str, work_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / "serve.log"
        self.env = {
            **os.environ,
            "TASKTRAIL_DATABASE_URL": database_url,
            "TASKTRAIL_ADMIN_TOKEN": ADMIN,
            "TASKTRAIL_VAR_DIR": str(work_dir / "var"),
            "TASKTRAIL_LOG_LEVEL": "warning",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> float:
        """Starts the process; returns the monotonic time it was started."""
        with self.log_path.open("ab") as log:
            log.write(f"--- start {time.time():.3f}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return time.monotonic()

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until(self.ready, timeout, "the server to become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, in-flight requests cut off mid-way."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def crashes(self) -> list[str]:
        """Log lines of a 500 (the API's "unexpected error", or uvicorn's own for an
        exception that escaped the app) or of a process that died of an exception (a
        traceback outside the JSON log). The background runners' logged retries while
        the store is away are expected, and not counted."""
        return [
            line[:3000]
            for line in self.output().splitlines()
            if any(sign in line for sign in CRASH_SIGNS) or line.startswith("Traceback")
        ]


@contextmanager
def serving(database_url: str, work_dir: Path) -> Iterator[ServeProcess]:
    """A `tasktrail serve` on `database_url`, ready, and stopped afterwards."""
    process = ServeProcess(database_url, work_dir)
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Polls `condition`; returns the seconds it took (fails after `timeout`)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def writer_token(base: str) -> str:
    """A writer key for org `acme`, issued by the platform admin."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        key = admin.post("/v1/api-keys", json={"org": ORG, "role": "writer", "name": "faults"})
    assert key.status_code == 201, key.text
    return str(key.json()["token"])


# ---------------------------------------------------------------------- the writers


@dataclass
class Write:
    """One logical write (one Idempotency-Key), however many attempts it took."""

    key: str
    kind: Literal["create", "transition"]
    title: str  # the task's title, unique to it: how a create is found again
    job: str = ""
    step: str = ""
    status: str = ""
    task_id: str = ""
    attempts: int = 0
    acknowledged: bool = False
    replayed: bool = False  # the acknowledgement was a replay of an earlier attempt's answer
    sent_at: float = 0.0  # monotonic: when the acknowledged attempt was sent
    acknowledged_at: float = 0.0  # monotonic


@dataclass
class Tally:
    """What the clients saw, across every thread."""

    statuses: Counter[int] = field(default_factory=Counter)  # every HTTP answer
    transport_errors: Counter[str] = field(default_factory=Counter)  # no answer at all
    hangs: int = 0  # attempts cut off by the client's timeout
    max_seconds: float = 0.0  # the longest attempt that got an answer or timed out
    unexpected: list[str] = field(default_factory=list)  # any 5xx but a proper 503, 4xx
    ack_times: list[float] = field(default_factory=list)  # monotonic, of every 2xx
    max_position: int = 0

    def first_ack_after(self, moment: float) -> float | None:
        later = [t for t in self.ack_times if t >= moment]
        return min(later) if later else None


class Writers:
    """`clients` threads, each driving `tasks_per_client` tasks through their life."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        clients: int = 8,
        tasks_per_client: int = 1000,
        patience: float = 10.0,
        max_backoff: float = 0.5,
        give_up_after: float = 120.0,
    ):
        self.base_url = base_url
        self.token = token
        self.clients = clients
        self.tasks_per_client = tasks_per_client
        self.patience = patience
        self.max_backoff = max_backoff
        self.give_up_after = give_up_after
        self.run_id = uuid.uuid4().hex[:8]
        self.writes: list[Write] = []
        self.tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._drive, args=(n,), name=f"writer-{n}", daemon=True)
            for n in range(clients)
        ]

    # -- control

    def start(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Lets every client finish the write it is on (until answered), then stop."""
        self._stop.set()
        self.join()

    def join(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"writers still running after {timeout} s: {alive}"

    def acknowledged(self) -> int:
        with self._lock:
            return len(self.tally.ack_times)

    def first_ack_after(self, moment: float) -> float | None:
        """When the first write acknowledged at or after `moment` was (monotonic)."""
        with self._lock:
            return self.tally.first_ack_after(moment)

    def sent_and_acknowledged_between(self, start: float, end: float) -> list[Write]:
        """The writes whose acknowledged attempt was sent after `start` and answered
        before `end` (monotonic): none, while the store cannot take writes."""
        with self._lock:
            return [
                w
                for w in self.writes
                if w.acknowledged and start <= w.sent_at and w.acknowledged_at < end
            ]

    def tried(self) -> int:
        return len(self.writes)

    def attempts(self) -> int:
        return sum(w.attempts for w in self.writes)

    # -- one client

    def _drive(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=self.patience) as client:
            for i in range(self.tasks_per_client):
                if self._stop.is_set():
                    return
                title = f"fault-{self.run_id}-{n}-{i}"
                create = Write(str(uuid.uuid4()), "create", title)
                task = self._send(client, create, "/v1/tasks", _task_body(title))
                if task is None:
                    return
                task_id = str(task["id"])
                path = f"/v1/tasks/{task_id}/transitions"
                for job, step, status in _life_of_a_task():
                    if self._stop.is_set():
                        return
                    write = Write(
                        str(uuid.uuid4()), "transition", title, job, step, status, task_id
                    )
                    transition = {"job": job, "step": step, "status": status}
                    if self._send(client, write, path, {"transitions": [transition]}) is None:
                        return

    def _send(
        self, client: httpx.Client, write: Write, path: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Sends `write` until it is answered; its answer, or None when it was refused."""
        with self._lock:
            self.writes.append(write)
        give_up_at = time.monotonic() + self.give_up_after
        while time.monotonic() < give_up_at:
            write.attempts += 1
            started = time.monotonic()
            try:
                response = client.post(path, json=body, headers={"Idempotency-Key": write.key})
            except httpx.TimeoutException:
                self._note_attempt(started, transport="timeout", hang=True)
                continue
            except httpx.TransportError as error:  # refused, reset: the server is down
                self._note_attempt(started, transport=type(error).__name__)
                time.sleep(0.05)
                continue
            self._note_attempt(started, status=response.status_code)
            if response.is_success:
                answer: dict[str, Any] = response.json()
                write.acknowledged = True
                write.sent_at, write.acknowledged_at = started, time.monotonic()
                write.replayed = response.headers.get("idempotent-replayed") == "true"
                if write.kind == "create":
                    write.task_id = str(answer["id"])
                with self._lock:
                    self.tally.ack_times.append(write.acknowledged_at)
                    self.tally.max_position = max(
                        self.tally.max_position, int(answer.get("position") or 0)
                    )
                return answer
            if response.status_code == 503 and (wait := _retry_after(response)) is not None:
                time.sleep(min(wait, self.max_backoff))
                continue
            if response.status_code == 409 and response.json().get("title") == "Request in flight":
                time.sleep(0.1)  # our own earlier attempt, still running: ask again
                continue
            self._unexpected(f"{write.kind} {path}: {response.status_code} {response.text[:300]}")
            if response.status_code < 500:
                return None  # refused: retrying the same request would be refused again
            time.sleep(0.2)
        self._unexpected(f"{write.kind} {path}: no answer in {self.give_up_after} s")
        return None

    def _note_attempt(
        self, started: float, *, status: int = 0, transport: str = "", hang: bool = False
    ) -> None:
        elapsed = time.monotonic() - started
        with self._lock:
            if status:
                self.tally.statuses[status] += 1
            else:
                self.tally.transport_errors[transport] += 1
            self.tally.hangs += hang
            if status or hang:  # a refused connection says nothing about the server's speed
                self.tally.max_seconds = max(self.tally.max_seconds, elapsed)

    def _unexpected(self, what: str) -> None:
        with self._lock:
            self.tally.unexpected.append(what)


def _life_of_a_task() -> Iterator[tuple[str, str, str]]:
    """Each step of each job, in turn, started and then done."""
    for j in range(JOBS):
        for s in range(STEPS):
            for status in ("in_progress", "done"):
                yield f"j{j}", f"s{s}", status


def _task_body(title: str) -> dict[str, Any]:
    jobs = [
        {
            "key": f"j{j}",
            "name": f"Job {j}",
            "steps": [{"key": f"s{s}", "name": f"Step {s}"} for s in range(STEPS)],
        }
        for j in range(JOBS)
    ]
    return {
        "type": "app.deploy",
        "title": title,
        "kind": "executable",
        "author": AUTHOR,
        "labels": {"fault": title},
        "jobs": jobs,
    }


def _retry_after(response: httpx.Response) -> float | None:
    """The 503's Retry-After in seconds, or None when it is not a proper problem + header."""
    media = response.headers.get("content-type", "").split(";")[0].strip()
    retry_after = response.headers.get("retry-after", "")
    if media != PROBLEM or not retry_after.isdigit() or int(retry_after) < 1:
        return None
    return float(retry_after)


# ---------------------------------------------------------------------- the check


@dataclass
class Stored:
    """What the store holds of the acknowledged writes, read back through the API."""

    tried: int
    acknowledged: int
    found_once: int
    lost: list[str]
    duplicated: list[str]
    stored_unacknowledged: list[str]

    def summary(self) -> str:
        return (
            f"writes tried {self.tried}, acknowledged {self.acknowledged}, found exactly once "
            f"{self.found_once}, lost {len(self.lost)}, duplicated {len(self.duplicated)}"
        )


def check_exactly_once(base_url: str, token: str, writers: Writers) -> Stored:
    """Every acknowledged create is one task (by its unique title), every acknowledged
    transition one event in its task's timeline; lists what is lost or duplicated."""
    acknowledged = [w for w in writers.writes if w.acknowledged]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        titles = _listed_titles(client, writers.tally.max_position)
        timelines = {
            w.task_id: _step_events(client, w.task_id) for w in acknowledged if w.kind == "create"
        }
    lost: list[str] = []
    duplicated: list[str] = []
    found_once = 0
    for write in acknowledged:
        if write.kind == "create":
            ids = titles.get(write.title, [])
            # The task stored under the title must be the one the client was told of.
            copies = len(ids) if write.task_id in ids else 0
            what = f"create {write.title}"
        else:
            event = "StepStarted" if write.status == "in_progress" else "StepFinished"
            copies = timelines[write.task_id].pop((write.job, write.step, event), 0)
            what = f"{write.title} {write.job}/{write.step} {write.status}"
        if copies == 0:
            lost.append(what)
        elif copies > 1:
            duplicated.append(f"{what} x{copies}")
        else:
            found_once += 1
    acknowledged_titles = {w.title for w in acknowledged if w.kind == "create"}
    # Stored, yet never acknowledged: tasks, and step events left over in the timelines.
    unacknowledged = sorted(set(titles) - acknowledged_titles) + [
        f"{task_id} {key}" for task_id, left in timelines.items() for key in left
    ]
    return Stored(
        tried=writers.tried(),
        acknowledged=len(acknowledged),
        found_once=found_once,
        lost=lost,
        duplicated=duplicated,
        stored_unacknowledged=unacknowledged,
    )


def _listed_titles(client: httpx.Client, min_position: int) -> dict[str, list[str]]:
    """Every task of the org in the activity feed, by title (ids of each)."""
    titles: dict[str, list[str]] = {}
    params: dict[str, Any] = {"limit": 500, "min_position": min_position}
    while True:
        page = client.get("/v1/tasks", params=params)
        assert page.status_code == 200, page.text
        document = page.json()
        for task in document["items"]:
            titles.setdefault(task["title"], []).append(task["id"])
        if not document.get("next_cursor"):
            return titles
        params = {"limit": 500, "cursor": document["next_cursor"]}


def _step_events(client: httpx.Client, task_id: str) -> Counter[tuple[str, str, str]]:
    """How often each (job, step, StepStarted|StepFinished) is in the task's timeline."""
    seen: Counter[tuple[str, str, str]] = Counter()
    params: dict[str, Any] = {}
    while True:
        page = client.get(f"/v1/tasks/{task_id}/timeline", params=params)
        assert page.status_code == 200, page.text
        document = page.json()
        for event in document["events"]:
            if event["type"] in ("StepStarted", "StepFinished"):
                data = event["data"]
                seen[(data["job"], data["step"], event["type"])] += 1
        if document.get("next_after_version") is None:
            return seen
        params = {"after_version": document["next_after_version"]}


# ---------------------------------------------------------------------- PostgreSQL of our own


class NoPostgresBinariesError(RuntimeError):
    """initdb and pg_ctl are not on the PATH: no private cluster can be made here."""


def _postgres_bin() -> Path:
    """Where initdb and pg_ctl are: Debian's versioned directories (newest first), else
    the PATH (as `scripts/test` looks for them)."""
    versioned = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    for directory in [*versioned, *([Path(on_path).parent] if on_path else [])]:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    raise NoPostgresBinariesError("no PostgreSQL server binaries (initdb, pg_ctl) found")


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temp dir on a free port (like `scripts/test`).

    initdb refuses to run as root, so as root the cluster belongs to the `postgres`
    user. It is the test's alone: stopping it touches no other test's database.
    """

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.as_owner: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="tasktrail-faults-pg."))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self.port = free_port()
        try:
            self._owner(
                "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                "--locale=C", "--no-sync",
            )  # fmt: skip
        except BaseException:
            self.remove()
            raise

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
            autocommit=True,
            connect_timeout=3,
        )

    def start(self) -> float:
        """Starts the server and waits until it accepts connections; returns when it did."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.dir}'"
        )
        self._owner(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "postgres.log"),
            "-w", "-t", "30", "-s", "start", "-o", options,
        )  # fmt: skip
        return time.monotonic()

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> float:
        """Stops the server (`fast`: clients cut off, clean shutdown); returns when it had."""
        self._owner("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "-s", "stop")
        return time.monotonic()

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self.as_owner, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                 "immediate", "-w", "-s", "stop"],
                cwd=self.dir, capture_output=True, check=False, timeout=30,
            )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)

    def _owner(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_owner, str(self.bin / program), *args],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            log = self.dir / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} {args[-1]} failed: {done.stderr}{done.stdout}\n{tail}")


# ---------------------------------------------------------------------- reporting


def figures(title: str, writers: Writers, **extra: object) -> str:
    """One block of figures, printed by each test (`pytest -s` or the `-rP` summary)."""
    tally = writers.tally
    lines = [
        f"== {title}",
        f"writes tried {writers.tried()}, acknowledged {len(tally.ack_times)}, "
        f"HTTP attempts {writers.attempts()}, "
        f"replayed acknowledgements {sum(w.replayed for w in writers.writes)}",
        f"answers by status {dict(sorted(tally.statuses.items()))}, "
        f"no answer {dict(tally.transport_errors)}, client timeouts (hangs) {tally.hangs}",
        f"longest answered attempt {tally.max_seconds:.2f} s",
        *(f"{name.replace('_', ' ')}: {value}" for name, value in extra.items()),
    ]
    return "\n".join(lines)
