"""``python -m bench.relaybench``: the same as ``python bench/relay.py``."""

import sys

from bench.relaybench.cli import main

if __name__ == "__main__":
    sys.exit(main())
