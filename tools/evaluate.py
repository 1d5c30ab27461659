#!/usr/bin/env python
"""Same as `eri evaluate` (kept for the papers' usage); the code and --help are in eri/commands/evaluate.py."""

import sys

from eri.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
