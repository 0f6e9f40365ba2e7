"""How big a run is: the full run, `--quick` (about 2 minutes) and `--smoke` (seconds)."""

from __future__ import annotations

import math
from dataclasses import dataclass

CLIENTS = 16


@dataclass(frozen=True)
class Scale:
    name: str
    tasks: int  # in the feed the list queries read
    seconds: float  # measured time of each load figure
    warmup: float  # unmeasured time before it
    page_size: int  # `limit` of the list queries
    deep_page: int  # the page reached by following next_cursor
    samples: int  # requests per latency figure (one client)
    read_task_events: int  # the task whose GET is measured
    timeline_task_events: int  # the task whose timeline is measured
    # Prepared work must outlast the load: transitions a second it is sized for.
    single_rate_ceiling: float = 2_000
    batch_rate_ceiling: float = 25_000

    @property
    def reruns(self) -> int:
        """Reruns of the flaky task: enough for `rerun_of` to reach the deep page."""
        return (self.deep_page + 1) * self.page_size

    def tasks_per_client(self, rate: float, transitions_per_task: int, batch: int = 1) -> int:
        needed = rate * (self.seconds + self.warmup) / transitions_per_task / CLIENTS
        return max(batch, math.ceil(needed / batch) * batch)


FULL = Scale("full", 100_000, 10.0, 1.0, 50, 100, 200, 500, 5_000)
QUICK = Scale("quick", 4_000, 3.0, 0.5, 5, 100, 30, 500, 5_000)
SMOKE = Scale("smoke", 300, 0.5, 0.1, 5, 5, 5, 100, 300)
