"""Same as `eri make-synthetic` (the papers' usage); the code and --help are in eri/commands/make_synthetic.py."""

import sys

from eri.commands.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main())
