"""A new user's first run, as the README tells it: no configuration, the embedded SQLite
default, the admin token printed once, then the README's walkthrough in its own words
(curl and python3 in bash) up to the graph picture."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

from tests.e2e.test_serve_postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
TASKTRAIL = Path(sys.executable).with_name("tasktrail")


def walkthrough(port: int) -> str:
    """The README's "A first task, step by step" block, against `port`, without the
    line that starts the server (the test starts it) or opens a browser."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### A first task, step by step", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's walkthrough has no sh block"
    lines = [
        line
        for line in block.group(1).splitlines()
        if not line.startswith(("scripts/run", "xdg-open"))
    ]
    return "set -euo pipefail\n" + "\n".join(lines).replace("localhost:8000", f"localhost:{port}")


def serve(port: int, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`tasktrail serve` in `cwd`, once it answers `/readyz`."""
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(TASKTRAIL), "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"tasktrail serve did not start:\n{log.read_text()}")
        time.sleep(0.1)


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(15)


def test_a_first_run_serves_sqlite_with_no_configuration_and_the_readme_works(
    tmp_path: Path,
) -> None:
    port = free_port()
    # No TASKTRAIL_* setting at all: the defaults a fresh machine gets.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKTRAIL_")}
    first_log, second_log = tmp_path / "serve.log", tmp_path / "again.log"
    token_file = tmp_path / "var" / "admin-token"

    server = serve(port, tmp_path, env, first_log)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert (tmp_path / "var" / "tasktrail.sqlite").exists()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token in first_log.read_text()

        done = subprocess.run(
            ["bash", "-c", walkthrough(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        picture = ET.fromstring((tmp_path / "graph.svg").read_text())
        texts = " ".join("".join(node.itertext()) for node in picture.iter())
        assert "Build" in texts and "Deploy" in texts, texts
    finally:
        stop(server)

    # A second start keeps the token and does not print it again.
    stop(serve(port, tmp_path, env, second_log))
    assert token_file.read_text().strip() == token
    assert token not in second_log.read_text()
    assert "Traceback" not in first_log.read_text() + second_log.read_text()
