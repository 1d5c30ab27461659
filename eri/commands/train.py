"""Train one model from a config: python tools/train.py --config configs/demo.yaml [--out DIR] [key=value ...]"""

from __future__ import annotations

from functools import partial

from eri.commands import parser
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--out", help="run directory (default: runs/<config name>); an existing run resumes")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_epochs=5 data.batch_size=16")
    args = p.parse_args(argv)
    from eri.config import load_config
    from eri.errors import EXIT_OK, EXIT_PARTIAL
    from eri.training.run import train

    cfg = load_config(args.config, args.overrides + ([f"out={args.out}"] if args.out else []))
    metrics = train(cfg)
    failed = any(isinstance(m, dict) and m.get("failed") for m in metrics.values())  # NaN predictions: not scored
    return EXIT_PARTIAL if metrics.get("skipped") or failed else EXIT_OK


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)
