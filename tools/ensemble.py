#!/usr/bin/env python
"""Same as `eri ensemble` (kept for the papers' usage); the code and --help are in eri/commands/ensemble.py."""

import sys

from eri.commands.ensemble import main, split_runs  # noqa: F401 - tests import it from here

if __name__ == "__main__":
    sys.exit(main())
