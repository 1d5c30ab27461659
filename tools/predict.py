#!/usr/bin/env python
"""Same as `eri predict` (kept for the papers' usage); the code and --help are in eri/commands/predict.py."""

import sys

from eri.commands.predict import main

if __name__ == "__main__":
    sys.exit(main())
