#!/usr/bin/env python
"""Same as `eri submit` (kept for the papers' usage); the code and --help are in eri/commands/submit.py."""

import sys

from eri.commands.submit import main

if __name__ == "__main__":
    sys.exit(main())
