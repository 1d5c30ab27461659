#!/usr/bin/env python
"""Train the MMA frame-level affect model: python tools/train_mma.py --config configs/mma/demo.yaml [--out DIR] [key=value ...]"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eri.cli import cli  # noqa: E402
from eri.mma.config import load_mma_config  # noqa: E402
from eri.mma.train import train_mma  # noqa: E402


def _run(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (see configs/mma/)")
    p.add_argument("--out", help="run directory (default: runs/<config name>); an existing run resumes")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_epochs=5 loss.consistency=0")
    args = p.parse_args(argv)
    cfg = load_mma_config(args.config, args.overrides + ([f"out={args.out}"] if args.out else []))
    train_mma(cfg)
    return 0


def main(argv=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
