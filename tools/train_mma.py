#!/usr/bin/env python
"""Same as `eri train-mma` (kept for the papers' usage); the code and --help are in eri/commands/train_mma.py."""

import sys

from eri.commands.train_mma import main

if __name__ == "__main__":
    sys.exit(main())
