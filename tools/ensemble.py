#!/usr/bin/env python
"""Train the missing members of an ensemble, reuse the finished ones, combine them, score honestly.

  python tools/ensemble.py --config configs/ensemble/X.yaml [--out DIR] [--runs RUN ...] [key=value ...]
  python tools/ensemble.py --runs runs/a runs/b [combiner=weights] --out DIR
  python tools/ensemble.py --config C --shard K/N     (N processes train the members, then one unsharded run combines)

Members are trained through the run cache shared with tools/ablate.py (runs/cache/<config hash>): a
finished member is read, never retrained. The ensemble's val score is cross-fitted (the combiner is
fitted on the other parts of the fit set), its test score comes from the final fit. Writes DIR/metrics.json
(with 95% bootstrap intervals), predictions_<split>.csv, members.csv, members.png and config.yaml.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eri.cli import cli  # noqa: E402
from eri.ensembles.config import load_ensemble_config  # noqa: E402
from eri.ensembles.ensemble import run_ensemble  # noqa: E402
from eri.errors import EXIT_OK  # noqa: E402
from eri.features.listing import parse_shard  # noqa: E402


def _run(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="ensemble config (see configs/ensemble/)")
    p.add_argument("--runs", nargs="+", default=[], help="existing run directories to add as members")
    p.add_argument("--out", help="ensemble directory (default runs/ensemble/<config name>)")
    p.add_argument("--shard", help="K/N: only train every N-th member run from the K-th; rerun unsharded to combine")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the ensemble config")
    a = p.parse_args(argv)
    if not a.config and not a.runs:
        p.error("give --config or --runs")
    cfg = load_ensemble_config(a.config, [*a.overrides, *([f"out={a.out}"] if a.out else [])], a.runs)
    m = run_ensemble(cfg, shard=parse_shard(a.shard))
    if m is None:
        print(f"shard {a.shard}: its member runs are trained; rerun without --shard to combine")
        return EXIT_OK
    rows = [("ensemble (" + m["combiner"]["name"] + ")", m["val"], m["test"])]
    print(f"\n{cfg.out}: {len(m['members'])} members; val = {m['fit_set']}, {m['val_is']}")
    for r in m["members"]:
        print(f"  {r['member']:<28} val {r.get('val_mean_pcc', float('nan')):.4f}  test {r.get('test_mean_pcc', float('nan')):.4f}")
    for name, val, test in rows:
        def fmt(s):
            return f"{s['mean_pcc']:.4f} [{s['ci95']['mean_pcc'][0]:.4f}, {s['ci95']['mean_pcc'][1]:.4f}]" if "mean_pcc" in s else s.get("not_scored", "")
        print(f"  {name:<28} val {fmt(val)}  test {fmt(test)}")
    print(f"  mean of the members: {json.dumps({k: round(v, 4) for k, v in m['mean_of_members'].items()})}")
    if m["val"].get("optimistic"):
        print(f"  caution: val is optimistic: {m['val']['optimistic']}")
    if m["combiners"]:
        print("  other combiners (cross-fitted val / test): " + ", ".join(
            f"{n} {v['val']:.4f}/{v['test']:.4f}" if v["test"] is not None else f"{n} {v['val']:.4f}" for n, v in m["combiners"].items()))
    return EXIT_OK


def main(argv=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
