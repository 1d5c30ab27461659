#!/usr/bin/env python
"""Same as `eri benchmark` (kept for the papers' usage); the code and --help are in eri/commands/benchmark.py."""

import sys

from eri.commands.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
