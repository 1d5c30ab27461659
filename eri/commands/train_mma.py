"""Train the MMA frame-level affect model: python tools/train_mma.py --config configs/mma/demo.yaml [--out DIR] [key=value ...]"""

from __future__ import annotations

from functools import partial

from eri.commands import parser
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("--config", required=True, help="YAML config (see configs/mma/)")
    p.add_argument("--out", help="run directory (default: runs/<config name>); an existing run resumes")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_epochs=5 loss.consistency=0")
    args = p.parse_args(argv)
    from eri.mma.config import load_mma_config
    from eri.mma.train import train_mma

    cfg = load_mma_config(args.config, args.overrides + ([f"out={args.out}"] if args.out else []))
    train_mma(cfg)
    return 0


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)
