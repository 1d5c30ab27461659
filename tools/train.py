#!/usr/bin/env python
"""Train one model from a config: python tools/train.py --config configs/demo.yaml [--out DIR] [key=value ...]"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eri.config import ConfigError, load_config  # noqa: E402
from eri.training.run import train  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--out", help="run directory (default: runs/<config name>); an existing run resumes")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_epochs=5 data.batch_size=16")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides + ([f"out={args.out}"] if args.out else []))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
