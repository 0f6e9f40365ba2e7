"""The processes under test: `tasktrail serve` and the baseline app, each on a free
loopback port, with their resident memory sampled from /proc."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
ADMIN_TOKEN = "tt_admin_bench_" + "0" * 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children, in KiB (0 once it is gone)."""
    try:
        total = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += rss_kib(int(child))
        return total
    except (FileNotFoundError, ProcessLookupError):
        return 0


def without_rate_limits() -> dict[str, str]:
    """Switches off any per-token or per-address rate limit the service has (0: no limit)."""
    from api.settings import Settings

    return {
        f"TASKTRAIL_{name.upper()}": "0"
        for name in Settings.model_fields
        if name.startswith("rate_limit") and name.endswith("per_second")
    }


class Process:
    """A server subprocess; its output goes to a log file, shown if it fails to start."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], workdir: Path, wait: bool = True
    ):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env={**os.environ, **env},
            cwd=str(workdir),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._peak = 0
        self._connection: http.client.HTTPConnection | None = None
        self._sampling: threading.Event | None = None
        self._sampler: threading.Thread | None = None
        if wait:
            self.wait_until_up()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not start:\n{tail}")

    def request(
        self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN
    ) -> tuple[int, Any]:
        """One set-up request on a kept-alive connection: (status, JSON body or text)."""
        headers = {"Authorization": f"Bearer {token}"}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self._connection.request(method, path, body=data, headers=headers)
                response = self._connection.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, OSError):
                # The server closes a connection left idle (uvicorn: after 5 s): reconnect.
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        try:
            return response.status, json.loads(raw or b"null")
        except ValueError:
            return response.status, raw.decode(errors="replace")

    # ---------------------------------------------------------------- memory

    def start_sampling(self) -> None:
        self._peak = rss_kib(self.pid)
        self._sampling = threading.Event()

        def sample() -> None:
            assert self._sampling is not None
            while not self._sampling.wait(0.05):
                self._peak = max(self._peak, rss_kib(self.pid))

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()

    def stop_sampling(self) -> float:
        """The peak resident memory since `start_sampling`, in MiB."""
        if self._sampling is not None and self._sampler is not None:
            self._sampling.set()
            self._sampler.join()
        return self._peak / 1024

    def rss_mib(self) -> float:
        return rss_kib(self.pid) / 1024

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def tasktrail_env(database_url: str, workdir: Path) -> dict[str, str]:
    return {
        "TASKTRAIL_DATABASE_URL": database_url,
        "TASKTRAIL_ADMIN_TOKEN": ADMIN_TOKEN,
        "TASKTRAIL_VAR_DIR": str(workdir / "var"),
        "TASKTRAIL_LOG_LEVEL": "warning",
        "TASKTRAIL_RUN_PROJECTIONS": "true",
        "PYTHONPATH": str(ROOT),  # this checkout's code, whatever the install knows of
        **without_rate_limits(),
    }


def tasktrail_server(database_url: str, workdir: Path) -> Process:
    """A real `tasktrail serve`: uvicorn, one worker, projection runners in process."""
    command = [str(Path(sys.executable).with_name("tasktrail")), "serve", "--workers", "1"]
    return Process("tasktrail", command, tasktrail_env(database_url, workdir), workdir)


def baseline_server(env: dict[str, str], workdir: Path) -> Process:
    """The minimal FastAPI + one INSERT app (`benchkit.baseline_app`), same uvicorn setup.

    Started without waiting: it comes up while the data loads, and idles until used."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "benchkit.baseline_app:app",
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    env = {**env, "PYTHONPATH": f"{SCRIPTS}{os.pathsep}{ROOT}"}
    return Process("baseline", command, env, workdir, wait=False)
