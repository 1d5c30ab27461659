"""Train the missing members of an ensemble, reuse the finished ones, combine them, score honestly.

  python tools/ensemble.py --config configs/ensemble/X.yaml [--out DIR] [--runs RUN ...] [key=value ...]
  python tools/ensemble.py --runs runs/a runs/b [combiner=weights] --out DIR
      (a key=value after --runs that is not an existing folder is an override, not a run)
  python tools/ensemble.py --config C --shard K/N     (N processes train the members, then one unsharded run combines)

Members are trained through the run cache shared with tools/ablate.py (runs/cache/<config hash>): a
finished member is read, never retrained. The ensemble's val score is cross-fitted (the combiner is
fitted on the other parts of the fit set), its test score comes from the final fit. Writes DIR/metrics.json
(with 95% bootstrap intervals), predictions_<split>.csv, labels.csv, dataset.json, members.csv, members.png
and config.yaml (`eri.runs`). Members must share one dataset by content (their dataset.json), wherever it lies now.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from eri.commands import parser, add_mlflow_flag
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("--config", help="ensemble config (see configs/ensemble/)")
    p.add_argument("--runs", nargs="+", default=[], help="existing run directories to add as members")
    p.add_argument("--out", help="ensemble directory (default runs/ensemble/<config name>)")
    p.add_argument("--shard", help="K/N: only train every N-th member run from the K-th; rerun unsharded to combine")
    add_mlflow_flag(p, "also log the result", "eri-ensemble")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the ensemble config")
    a = p.parse_args(argv)
    from eri.ensembles.config import load_ensemble_config
    from eri.ensembles.ensemble import run_ensemble, summary_table
    from eri.errors import EXIT_OK
    from eri.features.listing import parse_shard
    from eri.tracking import ENSEMBLES, describe, log_summary, require

    if a.mlflow:
        require()
    a.runs, a.overrides = split_runs(a.runs, a.overrides)
    if not a.config and not a.runs:
        p.error("give --config or --runs")
    cfg = load_ensemble_config(a.config, [*a.overrides, *([f"out={a.out}"] if a.out else [])], a.runs)
    m = run_ensemble(cfg, shard=parse_shard(a.shard))
    if m is None:
        print(f"shard {a.shard}: its member runs are trained; rerun without --shard to combine")
        return EXIT_OK
    print(f"\n{cfg.out}: {len(m['members'])} members; val = {m['fit_set']}, {m['val_is']}\n")
    print(summary_table(m))
    if m["val"].get("optimistic"):
        print(f"caution: val is optimistic: {m['val']['optimistic']}")
    print(f"(every number, per emotion, in {Path(cfg.out) / 'metrics.json'})")
    if a.mlflow:
        out = Path(cfg.out)
        scores = {k: m[k] for k in ("val", "test", "mean_of_members", "combiners", "ceiling") if k in m}
        files = [out / "config.yaml", out / "metrics.json", out / "members.csv"]
        run = log_summary(ENSEMBLES, str(out), cfg, scores, files)
        print(describe(ENSEMBLES, run))
    return EXIT_OK


def split_runs(runs: list[str], overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--runs`` takes every item up to the next flag, so ``--runs a b combiner=weights`` hands it the
    override too: an item with ``=`` that is not an existing folder is an override."""
    own = [r for r in runs if "=" in r and not Path(r).is_dir()]
    return [r for r in runs if r not in own], [*own, *overrides]


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)

