#!/usr/bin/env python
"""Same as `eri extract` (kept for the papers' usage); the code and --help are in eri/commands/extract.py."""

import sys

from eri.commands.extract import main

if __name__ == "__main__":
    sys.exit(main())
