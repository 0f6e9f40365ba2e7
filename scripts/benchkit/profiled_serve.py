"""`tasktrail serve` under pyinstrument: where a request's time goes, seen in the server.

    BENCH_PROFILE_OUT=/tmp/x python -m benchkit.profiled_serve serve --port 8000

FastAPI runs sync routes and dependencies in a thread pool, which a profiler of the
main thread would not see; here they run inline on the event loop's thread instead
(requests are handled one at a time, so only the profile is meaningful, not the
rates). The profile is written when the server stops (SIGTERM): `<out>.txt` and
`<out>.html`. Threads of their own (projection runners) are not in it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastapi.dependencies.utils
import fastapi.routing
import starlette.concurrency
import starlette.routing
from pyinstrument import Profiler


async def inline(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def main() -> int:
    for module in (
        fastapi.routing,
        fastapi.dependencies.utils,
        starlette.routing,
        starlette.concurrency,
    ):
        module.run_in_threadpool = inline  # type: ignore[attr-defined]
    from api.cli import main as tasktrail

    out = Path(os.environ["BENCH_PROFILE_OUT"])
    # uvicorn re-raises the SIGTERM it handled once it has shut down; with the default
    # action the process would die before the profile is written.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        return tasktrail(sys.argv[1:])
    finally:
        profiler.stop()
        out.with_suffix(".txt").write_text(profiler.output_text(unicode=True, show_all=False))
        out.with_suffix(".html").write_text(profiler.output_html())


if __name__ == "__main__":
    sys.exit(main())
