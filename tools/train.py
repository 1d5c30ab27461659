#!/usr/bin/env python
"""Train one model from a config: python tools/train.py --config configs/demo.yaml [--out DIR] [key=value ...]"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eri.cli import cli  # noqa: E402
from eri.config import load_config  # noqa: E402
from eri.errors import EXIT_OK, EXIT_PARTIAL  # noqa: E402
from eri.training.run import train  # noqa: E402


def _run(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--out", help="run directory (default: runs/<config name>); an existing run resumes")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_epochs=5 data.batch_size=16")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides + ([f"out={args.out}"] if args.out else []))
    metrics = train(cfg)
    failed = any(isinstance(m, dict) and m.get("failed") for m in metrics.values())  # NaN predictions: not scored
    return EXIT_PARTIAL if metrics.get("skipped") or failed else EXIT_OK


def main(argv=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
