"""Re-score a finished run's best checkpoint: python tools/evaluate.py --run RUN_DIR [key=value ...]

Prints the per-emotion table with 95% bootstrap intervals and, on synthetic data, the ceiling (as
tools/train.py does); overrides such as trainer.devices=2 trainer.strategy=ddp evaluate on
several processes (the split-level PCC is computed over all ranks' predictions).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from eri.commands import parser
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("--run", required=True, help="run directory written by tools/train.py")
    p.add_argument("--json", help="also write the scores to this JSON file")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    args = p.parse_args(argv)
    from eri.config import load_config, parse_override
    from eri.io import atomic_write_json
    from eri.training.metrics import format_table
    from eri.runs import CONFIG, ceiling_of
    from eri.training.run import evaluate

    scores = evaluate(args.run, overrides=dict(parse_override(o) for o in args.overrides))
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        cfg = load_config(Path(args.run) / CONFIG, args.overrides)
        print(format_table(scores, ceiling_of(cfg.data.root, folds=bool(cfg.data.cv.folds))))
        if args.json:
            atomic_write_json(args.json, scores)
    return 0


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)

