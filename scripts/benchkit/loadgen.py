"""The load generator: its own process, asyncio over raw HTTP/1.1 keep-alive sockets.

    python -m benchkit.loadgen SPEC.json   →   one JSON result on stdout

It is kept apart from the server (a separate process, on loopback) and cheap per
request (requests are pre-encoded bytes; responses are parsed only as far as the
status line and the body's length), so on a 2-core machine it leaves the server
as much CPU as it can. A spec is one of:

- `{"mode": "timed", "seconds", "warmup", "clients", "requests": [[req, ...] per client]
  | "repeat": req}`: each client sends its own requests in order (or `repeat` over
  and over) on one connection until the time is up; requests sent during `warmup`
  are not counted. A client whose list runs out stops (`exhausted` in the result).
  With `count_items`, the `status` of each of `results` in a 2xx answer is counted
  too (`item_statuses`: a batch answers 200 with per-item outcomes).
- `{"mode": "sequence", "groups": [{"name", "request": req, "count"}]}`: one client
  sends each group's request `count` times in turn (after 3 unmeasured ones):
  latency without queueing.

`req` is `[method, path, body or null]`; `headers` apply to all of them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(latencies: list[float], seconds: float) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies, default=0.0) * 1000,
    }


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            body = await self._chunked()
        else:
            body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def encoder(host: str, port: int, headers: dict[str, str]) -> Any:
    fixed = f"Host: {host}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    def encode(request: list[Any]) -> bytes:
        method, path, body = request
        payload = b"" if body is None else body.encode()
        head = f"{method} {path} HTTP/1.1\r\n{fixed}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        return (head + "\r\n").encode() + payload

    return encode


class Tally:
    def __init__(self, count_items: bool = False) -> None:
        self.count_items = count_items
        self.items: dict[str, int] = {}  # per-item statuses of batch answers
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.sample_error: str | None = None
        self.sample_body: str | None = None

    def record(self, status: int, body: bytes, seconds: float, counted: bool) -> None:
        if self.sample_body is None:
            self.sample_body = body[:600].decode("utf-8", "replace")
        if status >= 300 and self.sample_error is None:
            self.sample_error = f"{status} {body[:400].decode('utf-8', 'replace')}"
        if counted:
            self.latencies.append(seconds)
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            if self.count_items and status < 300:
                for item in json.loads(body).get("results", []):
                    key = str(item.get("status"))
                    self.items[key] = self.items.get(key, 0) + 1

    def result(self, seconds: float) -> dict[str, Any]:
        errors = sum(n for s, n in self.statuses.items() if int(s) >= 300)
        return {
            **summary(self.latencies, seconds),
            "errors": errors,
            "statuses": self.statuses,
            "sample_error": self.sample_error,
            "sample_body": self.sample_body,
            "item_statuses": self.items,
        }


async def timed(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["port"]
    encode = encoder(host, port, spec.get("headers", {}))
    clients = int(spec["clients"])
    if "repeat" in spec:
        one = encode(spec["repeat"])
        scripts: list[list[bytes] | None] = [None] * clients
    else:
        one = b""
        scripts = [[encode(r) for r in mine] for mine in spec["requests"]]
    tally = Tally(bool(spec.get("count_items")))
    exhausted = 0
    begin = time.perf_counter()
    counted_from = begin + float(spec.get("warmup", 0))
    deadline = counted_from + float(spec["seconds"])
    last_done = counted_from

    async def client(script: list[bytes] | None) -> None:
        nonlocal exhausted, last_done
        connection = Connection(host, port)
        n = 0
        try:
            while time.perf_counter() < deadline:
                if script is None:
                    request = one
                elif n < len(script):
                    request = script[n]
                else:
                    exhausted += 1
                    return
                n += 1
                started = time.perf_counter()
                status, body = await connection.send(request)
                done = time.perf_counter()
                counted = started >= counted_from
                tally.record(status, body, done - started, counted)
                if counted:
                    last_done = max(last_done, done)
        finally:
            connection.close()

    await asyncio.gather(*(client(s) for s in scripts))
    # The window ends when the last counted request came back (a slow one may end
    # after the deadline), but never before the deadline (a run of errors is quick).
    end = max(last_done, min(time.perf_counter(), deadline))
    return {**tally.result(end - counted_from), "exhausted_clients": exhausted}


async def sequence(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["port"]
    encode = encoder(host, port, spec.get("headers", {}))
    connection = Connection(host, port)
    results = {}
    try:
        for group in spec["groups"]:
            request = encode(group["request"])
            tally = Tally()
            for n in range(3 + int(group["count"])):
                started = time.perf_counter()
                status, body = await connection.send(request)
                tally.record(status, body, time.perf_counter() - started, n >= 3)
            results[group["name"]] = tally.result(sum(tally.latencies))
    finally:
        connection.close()
    return results


def main() -> None:
    with open(sys.argv[1]) as file:
        spec = json.load(file)
    try:
        import uvloop  # a faster event loop, when installed (uvicorn[standard] has it)

        uvloop.install()
    except ImportError:
        pass
    run = timed if spec["mode"] == "timed" else sequence
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
