#!/usr/bin/env python
"""Same as `eri compare` (kept for the papers' usage); the code and --help are in eri/commands/compare.py."""

import sys

from eri.commands.compare import main

if __name__ == "__main__":
    sys.exit(main())
