"""Relay benchmark: ``python bench/relay.py --help``. The code is the `bench.relaybench` package."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/relay.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(REPO))

from bench.relaybench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
