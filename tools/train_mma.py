#!/usr/bin/env python
"""Train the MMA frame-level affect model: python tools/train_mma.py --config configs/mma/demo.yaml [--out DIR] [key=value ...]"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eri.config import ConfigError  # noqa: E402
from eri.mma.config import load_mma_config  # noqa: E402
from eri.mma.train import train_mma  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (see configs/mma/)")
    p.add_argument("--out", help="run directory (default: runs/<config name>); an existing run resumes")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_epochs=5 loss.consistency=0")
    args = p.parse_args(argv)
    try:
        cfg = load_mma_config(args.config, args.overrides + ([f"out={args.out}"] if args.out else []))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train_mma(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
