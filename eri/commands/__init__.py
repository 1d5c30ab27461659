"""The ``eri`` command: one subcommand per tool (``eri train ...`` = ``python tools/train.py ...``).

Each subcommand is a module here with ``main(argv=None, prog=None) -> int`` that parses its arguments
first and imports torch, Lightning, pandas and the training code only afterwards, so ``--help`` and a
mistyped flag answer at once. ``eri.commands`` may import any eri subpackage; none may import it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module in eri.commands, one-line summary for `eri --help`)
COMMANDS = {
    "train": ("train", "train one model from a config"),
    "evaluate": ("evaluate", "re-score a finished run's best checkpoint"),
    "predict": ("predict", "predict the 7 intensities of new videos with a trained model"),
    "extract": ("extract", "extract features from raw videos into a feature store"),
    "ensemble": ("ensemble", "train the missing members of an ensemble, combine and score them"),
    "compare": ("compare", "paired bootstrap of two runs or ensembles: is A better than B?"),
    "search": ("search", "Optuna study over fusion choices"),
    "ablate": ("ablate", "train the papers' ablation tables"),
    "submit": ("submit", "write the challenge submission CSV of a run or an ensemble"),
    "benchmark": ("benchmark", "benchmarks that print numbers (train, demo, scale, ensemble, extract)"),
    "make-synthetic": ("make_synthetic", "write a synthetic Hume-Reaction-like dataset"),
    "train-mma": ("train_mma", "train the MMA frame-level affect model"),
    "list": ("components", "print the registered components (encoders, fusions, extractors, ...) per family"),
}


def parser(prog: str | None, doc: str | None) -> argparse.ArgumentParser:
    """A subcommand's parser: its module docstring as the help text, kept as written."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_mlflow_flag(p: argparse.ArgumentParser, what: str, experiment: str) -> None:
    """``--mlflow``: log ``what`` into the shared MLflow store (`eri.tracking`) as a run of ``experiment``."""
    p.add_argument("--mlflow", action="store_true", help=f"{what} as a run of MLflow experiment {experiment} "
                   "(store: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)")


def main(argv=None) -> int:
    """``eri COMMAND [args]``: dispatch to ``eri.commands.<module>.main`` (exit codes: see `eri.errors`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(f"eri.commands.{COMMANDS[argv[0]][0]}")
        return module.main(argv[1:], prog=f"eri {argv[0]}")
    from eri.constants import VERSION

    width = max(map(len, COMMANDS))
    table = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="eri",
        description="Video-level Emotional Reaction Intensity estimation. `eri COMMAND --help` for each command.",
        epilog=f"commands:\n{table}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"eri {VERSION}")
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below")
    p.parse_args(argv)  # no command: usage and exit 2; --help / --version: exit 0
    return 2
