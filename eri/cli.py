"""How every tool in ``tools/`` ends: input errors as one ``error:`` line (passwords masked) and the
exit codes of `eri.errors`."""

from __future__ import annotations

import signal
import sys

from eri.errors import EXIT_INPUT, EXIT_INTERRUPTED, InputError
from eri.io import mask_secrets


def cli(main, argv=None) -> int:
    """Run a tool's ``main(argv) -> exit code``: input errors become one ``error:`` line and exit 2,
    Ctrl-C exits 130. Use as ``sys.exit(cli(main))``."""
    try:
        return main(argv)
    except InputError as e:
        print(f"error: {mask_secrets(e)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        pass
    except SystemExit as e:  # Lightning turns Ctrl-C during a fit into exit(1) with SIGINT ignored
        if not isinstance(e.__context__, KeyboardInterrupt):
            raise
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("interrupted: rerun the same command to resume", file=sys.stderr)
    return EXIT_INTERRUPTED
