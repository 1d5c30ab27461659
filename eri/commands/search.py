"""Optuna study over fusion choices (one worker; start more with the same command and --storage).

    python tools/search.py --config configs/search/fusion.yaml [--storage URL] [--study-name NAME]
                           [--n-trials N] [--timeout S] [--out DIR] [--no-final] [key=value ...]

--n-trials is the study's total over all workers and reruns; rerunning continues the study.
Default storage: sqlite:///<out>/study.db. Several machines: a shared PostgreSQL URL, e.g.
postgresql+psycopg2://user@host:5432/db (from a clone, `python tests/local_postgres.py` starts a
throwaway local one).
When the study is complete: <out>/best.yaml (run it with tools/train.py --config), <out>/best/ (its
retrain, scored on test), <out>/plots/*.png, <out>/trials.csv, <out>/summary.json.
key=value overrides apply to the search config (e.g. pruner.name=hyperband).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from eri.commands import parser, add_mlflow_flag
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("--config", required=True, help="search config (see configs/search/)")
    p.add_argument("--storage", help="SQLAlchemy URL shared by the workers (default: SQLite in the study folder)")
    p.add_argument("--study-name")
    p.add_argument("--n-trials", type=int, help="the study's total number of trials")
    p.add_argument("--timeout", type=float, help="seconds after which this process starts no new trial")
    p.add_argument("--out", help="study folder (default runs/search/<config name>)")
    p.add_argument("--no-final", action="store_true", help="skip the best-config retrain and plots in this worker")
    add_mlflow_flag(p, "when the study is complete, log its summary", "eri-search")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the search config")
    a = p.parse_args(argv)
    from eri.io import mask_secrets
    from eri.search.study import load_search_config, run_search, summary_table
    from eri.tracking import SEARCHES, describe, log_summary, require

    if a.mlflow:
        require()
    extra = [
        f"{k}={v}"
        for k, v in (
            ("storage", a.storage),
            ("study_name", a.study_name),
            ("n_trials", a.n_trials),
            ("timeout", a.timeout),
            ("out", a.out),
        )
        if v is not None
    ]
    scfg = load_search_config(a.config, [*a.overrides, *extra])
    result = run_search(scfg, final=False if a.no_final else None)
    print(f"\nstudy '{scfg.study_name}' in {mask_secrets(scfg.storage)}\n" + mask_secrets(summary_table(result)))
    if "best_trial" in result:
        print(f"(files in {scfg.out}: best.yaml, summary.json, trials.csv, plots/)")
    if a.mlflow and "best_trial" in result:
        out = Path(scfg.out)
        params = {**scfg, **{f"best.{k}": v for k, v in result["best_params"].items()}}
        keys = ("best_val_mean_pcc", "paper_val_mean_pcc", "trials_per_hour", "retrain")
        scores = {k: result[k] for k in keys if k in result}
        files = [out / "best.yaml", out / "summary.json", out / "trials.csv"]
        run = log_summary(SEARCHES, scfg.study_name, params, scores, files)
        print(describe(SEARCHES, run))
    elif a.mlflow:
        print("MLflow: nothing logged: the study is not complete in this worker")
    return 0


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)

