"""`scripts/bench`'s entry point; the benchmark itself is the `benchkit` package beside it.

scripts/bench [--quick | --smoke] [--json PATH] [--database postgres|sqlite|both]
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]

from benchkit.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
