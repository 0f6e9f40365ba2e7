"""A one-line progress bar on stderr (the Markdown table goes to stdout)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, unit: str = "", width: int = 28):
        self.label, self.total, self.unit, self.width = label, max(total, 1), unit, width
        self.done = 0
        self.extra = ""
        self.started = time.perf_counter()
        self._drawn = 0.0

    def advance(self, amount: int = 1, extra: str = "") -> None:
        self.done += amount
        self.extra = extra or self.extra
        now = time.perf_counter()
        if now - self._drawn >= 0.2 or self.done >= self.total:
            self._drawn = now
            self._draw()

    def _draw(self) -> None:
        share = min(1.0, self.done / self.total)
        filled = int(share * self.width)
        elapsed = time.perf_counter() - self.started
        sys.stderr.write(
            f"\r  {self.label:<26} [{'#' * filled}{'-' * (self.width - filled)}] {share:5.0%} "
            f"{self.done:,}/{self.total:,} {self.unit} {self.extra} ({elapsed:.0f} s)  "
        )
        sys.stderr.flush()

    def close(self) -> float:
        self._draw()
        sys.stderr.write("\n")
        sys.stderr.flush()
        return time.perf_counter() - self.started


STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)
