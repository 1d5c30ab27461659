"""Train the papers' ablation tables and write them (Markdown, CSV, LaTeX, a bar chart per table).

    python tools/ablate.py --table 004-table2 [--seeds N] [--preset tiny|hume-small|real] [--out DIR] [key=value ...]
    python tools/ablate.py --table all --preset tiny

Tables: 004-table2 (holistic / AU / audio combinations), 004-table3 (AU occurrence, intensity, both),
000-table3 (MMA subsets VA / EXPR / AU, Mask layer, routing, PCC vs MSE loss), 000-table4 (GRU vs
LSTM, layers, units), 004-parity (the authors' code against eri's choices, one at a time),
004-demo-authors (the demo against the previous demo), demo-variants (the demo against single streams,
mean pooling, paper 004's layout, the masked RNN: what its design rests on), 000-e2e (paper 000's regime 1 against end-to-end
training from face crops, on the synthetic face videos: small-faces at hume-small, tiny-faces at tiny;
--preset real needs --mma-checkpoint and the crops stream under --data-root). Prints one [k/N] line per
(row, seed) with an ETA, then the tables. Rows are cached by their resolved config in runs/cache (shared with tools/ensemble.py): a rerun trains
only what changed. Each row is compared with the table's reference row by a paired bootstrap over videos.
key=value overrides apply to every row (e.g. trainer.max_epochs=6) and are part of the cache key.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from eri.commands import parser, add_mlflow_flag
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    from eri.search.ablate import PRESETS, TABLES  # numpy + omegaconf (~0.3 s); the training code comes later

    p = parser(prog, __doc__)
    p.add_argument("--table", required=True, help=f"one of {sorted(TABLES)}, or all (the tables on feature streams; "
                   "000-e2e brings its own data, face videos, and runs by name)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per row (mean and std)")
    p.add_argument("--preset", default="hume-small", choices=sorted(PRESETS))
    p.add_argument("--out", help="output folder (default runs/ablate/<preset>)")
    p.add_argument("--shard", help="K/N: train only every N-th (row, seed) job from the K-th; rerun unsharded to write the tables")
    p.add_argument("--runs", default="runs/cache", help="the run cache shared with tools/ensemble.py (default runs/cache)")
    p.add_argument("--data-root", help="dataset root (required by --preset real; default: the preset's)")
    p.add_argument("--mma-checkpoint", help="table 000-e2e: your tools/train_mma.py checkpoint (required by --preset "
                   "real; otherwise one is trained on generated faces and cached)")
    add_mlflow_flag(p, "also log each table", "eri-ablate")
    p.add_argument("overrides", nargs="*", help="key=value applied to every row")
    a = p.parse_args(argv)
    from eri.features.listing import parse_shard
    from eri.search.ablate import run_tables
    from eri.tracking import ABLATIONS, describe, log_summary, require

    if a.mlflow:
        require()
    if a.preset == "real" and not a.data_root:
        p.error("--preset real needs --data-root pointing at your dataset")
    if a.seeds < 1:
        p.error("--seeds must be >= 1")
    names = sorted(n for n in TABLES if not TABLES[n].data) if a.table == "all" else a.table.split(",")
    results = run_tables(
        names,
        preset=a.preset,
        seeds=a.seeds,
        out=a.out or f"runs/ablate/{a.preset}",
        runs=a.runs,
        shard=parse_shard(a.shard),
        extra=a.overrides,
        data_root=a.data_root,
        inputs={"mma_checkpoint": a.mma_checkpoint} if a.mma_checkpoint else None,
    )
    for r in results:
        if a.shard:
            continue
        print(Path(r["folder"], "table.md").read_text())
        print(f"({r['trained']} run(s) trained, the rest cached; files in {r['folder']})\n")
        if a.mlflow:
            params = {"table": r["table"], "preset": a.preset, "seeds": a.seeds, "overrides": a.overrides,
                      "data_root": a.data_root}
            scores = {row["row"]: {k: row[k] for k in ("val_mean", "val_std", "test_mean", "test_std", "test_diff")
                                   if row.get(k) is not None} for row in r["rows"]}
            files = [Path(r["folder"], f) for f in ("table.csv", "table.md")]
            run = log_summary(ABLATIONS, r["table"], params, scores, files)
            print(describe(ABLATIONS, run))
    return 1 if any(row["error"] for r in results for row in r["rows"]) else 0


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)

