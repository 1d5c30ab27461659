#!/usr/bin/env python
"""Same as `eri ablate` (kept for the papers' usage); the code and --help are in eri/commands/ablate.py."""

import sys

from eri.commands.ablate import main

if __name__ == "__main__":
    sys.exit(main())
