#!/usr/bin/env python
"""Same as `eri train` (kept for the papers' usage); the code and --help are in eri/commands/train.py."""

import sys

from eri.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
