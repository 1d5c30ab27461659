"""One error family for everything a user can get wrong, and one way every tool reports it.

A problem with user input (a config, a label file, a feature file, a checkpoint, a data root, a
database URL) raises an `InputError` whose message names the file or key and the problem, on one
line. Every tool runs its ``main`` through `eri.cli.cli`, which prints that message as
``error: ...`` and exits with `EXIT_INPUT`; nothing was written or lost at that point. A bug still
shows its traceback.

Exit codes, the same for every tool in ``tools/``:

    0    done
    1    done, but some videos or files failed or were skipped (each one is in the report or warning)
    2    input or config error: one ``error:`` line, nothing done
    130  interrupted (Ctrl-C): rerun the same command to resume
"""

from __future__ import annotations

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class InputError(Exception):
    """User input that cannot be used; the message names the file or key and the problem."""

    MAX_CHARS = 2000  # a 5 MB label cell quoted in a message must not become a 5 MB error line

    def __str__(self) -> str:  # always one line, whatever a library put into the message
        line = " ".join(str(self.args[0] if self.args else "").split())
        if len(line) <= self.MAX_CHARS:
            return line
        return f"{line[:1400]} ... ({len(line) - 1900} characters left out) ... {line[-500:]}"


class ConfigError(InputError, ValueError):
    """A config file, key, value or override that is wrong."""


class LabelError(InputError, ValueError):
    """A label file that is malformed: missing columns, bad ids, duplicate ids, bad values."""


class StoreError(InputError, RuntimeError):
    """A feature store (or one of its files) that is missing, damaged or inconsistent."""


class CheckpointError(InputError, ValueError):
    """A checkpoint or weights file that is damaged or does not hold what it should."""


class UnsafeFileError(CheckpointError):
    """A checkpoint or weights file that would run code when loaded (pickled objects), so is refused."""


class WeightsError(InputError, FileNotFoundError):
    """Pretrained weights that are missing or unusable (the message says which file and how to get them)."""
