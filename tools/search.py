#!/usr/bin/env python
"""Same as `eri search` (kept for the papers' usage); the code and --help are in eri/commands/search.py."""

import sys

from eri.commands.search import main

if __name__ == "__main__":
    sys.exit(main())
