"""An ensemble run: members trained or reused, combined, scored honestly, written like a run directory.

    <out>/config.yaml             the resolved ensemble config
    <out>/metrics.json            {"val": {..., "ci95"}, "test": {...}, "members": [...], "combiner", "combiners", ...}
    <out>/predictions_val.csv     the fit set (val, or the fold pool), each video predicted by a combiner
                                  that did not see it (cross-fitting); predictions_test.csv: the final combiner
    <out>/members.csv             each member's val/test mean PCC and its runs
    <out>/members.png             per-emotion PCC of each member against the ensemble, with 95% intervals
    <out>/labels.csv              the labels it was scored with (val: the fit set), from its members' runs
    <out>/dataset.json            the data signature its member runs share (`eri.data.signature`)

The combiner never sees the predictions it is scored on: the ensemble's "val" is cross-fitted within
the fit set (`eri.ensembles.combiners`), and test is scored once, with the combiner fitted on the
whole fit set. Val is still optimistic, and ``metrics["val"]["optimistic"]`` says why, when the
members chose their best epoch on those same videos (plain runs select on val; out-of-fold members
with ``cv.select: last`` do not), or when ``search.n_trials`` > 0 let Optuna choose the members and
the combiner on that very score. Test is then the honest estimate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eri.config import to_yaml
from eri.constants import EMOTIONS
from eri.ensembles.combiners import COMBINERS, Combination
from eri.ensembles.members import Member, build_members, labels, stack
from eri.ensembles.submission import ensemble_signature
from eri.errors import InputError
from eri.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from eri.runs import CONFIG, MEMBERS, METRICS, SIGNATURE, write_labels, write_predictions
from eri.training.metrics import bootstrap_ci, bootstrap_counts, percentile_ci, resampled_pcc, score


def _scored(pred: np.ndarray, y: np.ndarray, ecfg) -> dict:
    if np.isnan(y).any() or len(y) < 2:
        return {"not_scored": f"{int(np.isnan(y).any(axis=1).sum())} of {len(y)} videos have no labels"}
    return {**score(pred, y), "ci95": bootstrap_ci(pred, y, ecfg.bootstrap_resamples, ecfg.bootstrap_seed)}


def combine(members: list[Member], combiner: str, ecfg) -> dict:
    """Fit one combiner over ``members``: honest val (cross-fitted) and test predictions and scores."""
    fit_ids, x_fit = stack(members, "fit")
    test_ids, x_test = stack(members, "test")
    y_fit, y_test = labels(members, fit_ids), labels(members, test_ids)
    if np.isnan(y_fit).any():
        raise InputError(f"{int(np.isnan(y_fit).any(axis=1).sum())} fit-set videos have no labels: cannot fit a combiner")
    c = Combination(combiner, ecfg.cross_fit, ecfg.cross_fit_seed)
    val_pred, test_pred = c.fit(x_fit, y_fit, x_test)
    return {"combiner": combiner, "val_pred": val_pred, "test_pred": test_pred, "fit_ids": fit_ids,
            "test_ids": test_ids, "y_fit": y_fit, "y_test": y_test, "x_fit": x_fit, "x_test": x_test,
            "val": _scored(val_pred, y_fit, ecfg), "test": _scored(test_pred, y_test, ecfg),
            "final": {"name": combiner, **c.final.describe()}}


def search(members: list[Member], ecfg) -> tuple[list[Member], str, float]:
    """Optuna over which members (at least one) and which combiner, on the cross-fitted val mean PCC."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial) -> float:
        use = [m for m in members if trial.suggest_categorical(f"use:{m.name}", [True, False])]
        name = trial.suggest_categorical("combiner", list(ecfg.search.combiners))
        if not use:
            raise optuna.TrialPruned()
        return combine(use, name, ecfg)["val"]["mean_pcc"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=ecfg.search.seed))
    study.enqueue_trial({**{f"use:{m.name}": True for m in members}, "combiner": ecfg.combiner})
    study.optimize(objective, n_trials=ecfg.search.n_trials)
    best = study.best_trial
    return [m for m in members if best.params[f"use:{m.name}"]], best.params["combiner"], best.value


def run_ensemble(ecfg, progress=print, shard: tuple[int, int] = (0, 1)) -> dict | None:
    """Build the members, combine them, and write the ensemble directory (see the module docstring).
    With ``shard=(k, n)``, n > 1: only train this shard's member runs and return None (see `build_members`)."""
    progress = progress or (lambda *_: None)
    out = Path(ecfg.out)
    members = build_members(ecfg, progress, shard)
    if members is None:
        return None
    selected, val_selected = members, None
    combiner = ecfg.combiner
    if ecfg.search.n_trials:
        selected, combiner, val_selected = search(members, ecfg)
    result = combine(selected, combiner, ecfg)
    others = {name: combine(selected, name, ecfg) for name in COMBINERS if name != combiner} if len(selected) > 1 else {}
    optimistic = ("chosen by the Optuna search on this very score" if val_selected is not None else
                  "its members chose their best epoch on these videos" if any(m.chose_on_fit_set for m in selected)
                  else None)
    if optimistic and "mean_pcc" in result["val"]:
        result["val"]["optimistic"] = optimistic + ": test is the honest score"
    metrics = {
        "val": result["val"], "test": result["test"], "combiner": result["final"],
        "fit_set": "out-of-fold predictions of the fold pool" if members[0].data["cv"] else "the val split",
        "val_is": f"cross-fitted: {ecfg.cross_fit} parts, fit on the others, scored on each",
        "members": [_member_row(m, result, i) for i, m in enumerate(selected)],
        "mean_of_members": _mean_of_members(selected, result),
        "combiners": {n: {"val": r["val"].get("mean_pcc"), "test": r["test"].get("mean_pcc")} for n, r in others.items()},
        "data": members[0].data,
    }
    if val_selected is not None:
        metrics["not_selected"] = [m.name for m in members if m not in selected]
    ceiling = members[0].ceiling
    if ceiling:
        metrics["ceiling"] = ceiling
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG, to_yaml(ecfg))
    write_predictions(out, "val", result["fit_ids"], result["val_pred"])
    write_predictions(out, "test", result["test_ids"], result["test_pred"])
    write_labels(out, pd.concat([_label_rows(result["fit_ids"], "val", result["y_fit"]),
                                 _label_rows(result["test_ids"], "test", result["y_test"])], ignore_index=True))
    atomic_write_text(out / MEMBERS, pd.DataFrame(metrics["members"]).drop(columns=["pcc"]).to_csv(index=False))
    atomic_write_json(out / SIGNATURE, ensemble_signature([r for m in selected for r in m.runs]))
    atomic_write_json(out / METRICS, metrics)
    figure(out / "members.png", selected, result, ecfg)
    return metrics


def _label_rows(ids: list[str], split: str, y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"File_ID": ids, "split": split, **dict(zip(EMOTIONS, y.T))})


def summary_table(metrics: dict) -> str:
    """One table of a finished ensemble (what tools/ensemble.py prints; the numbers stay in metrics.json):
    each member, their mean, the ensemble with 95% intervals, the other combiners and the ceiling."""
    from tabulate import tabulate

    def pcc(x) -> str:
        return "" if x is None else f"{x:.4f}"

    def scored(s: dict) -> str:
        if "mean_pcc" not in s:
            return s.get("not_scored", "")
        lo, hi = s["ci95"]["mean_pcc"]
        return f"{s['mean_pcc']:.4f} [{lo:.4f}, {hi:.4f}]"

    rows = [[f"member {r['member']}", pcc(r.get("val_mean_pcc")), pcc(r.get("test_mean_pcc"))] for r in metrics["members"]]
    mean = metrics.get("mean_of_members", {})
    rows.append(["mean of the members", pcc(mean.get("val")), pcc(mean.get("test"))])
    rows.append([f"ensemble ({metrics['combiner']['name']})", scored(metrics["val"]), scored(metrics["test"])])
    rows += [[f"  other combiner: {n}", pcc(v["val"]), pcc(v["test"])] for n, v in metrics.get("combiners", {}).items()]
    if metrics.get("ceiling"):
        rows.append(["ceiling (synthetic)", pcc(metrics["ceiling"].get("val")), pcc(metrics["ceiling"].get("test"))])
    return tabulate(rows, ["", "val mean PCC (cross-fitted) [95% CI]", "test mean PCC [95% CI]"],
                    tablefmt="simple", disable_numparse=True)


def _member_row(m: Member, result: dict, i: int) -> dict:
    row = {"member": m.name, "runs": " ".join(str(r) for r in m.runs)}
    for split, x, y in (("val", result["x_fit"], result["y_fit"]), ("test", result["x_test"], result["y_test"])):
        if not np.isnan(y).any():
            s = score(x[i], y)
            row[f"{split}_mean_pcc"] = s["mean_pcc"]
            row.setdefault("pcc", {})[split] = s["pcc"]
    return row


def _mean_of_members(members: list[Member], result: dict) -> dict:
    """The members' average single-model score (what an ensemble should beat)."""
    out = {}
    for split, x, y in (("val", result["x_fit"], result["y_fit"]), ("test", result["x_test"], result["y_test"])):
        if not np.isnan(y).any():
            out[split] = float(np.mean([score(xm, y)["mean_pcc"] for xm in x]))
    return out


def figure(path: Path, members: list[Member], result: dict, ecfg) -> None:
    """Per-emotion PCC (test if labelled, else val) of each member and of the ensemble, 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = "test" if not np.isnan(result["y_test"]).any() else "val"
    x, y = (result["x_test"], result["y_test"]) if split == "test" else (result["x_fit"], result["y_fit"])
    ens = result["test_pred"] if split == "test" else result["val_pred"]
    counts = bootstrap_counts(len(y), ecfg.bootstrap_resamples, ecfg.bootstrap_seed)
    series = [(m.name, xm) for m, xm in zip(members, x)] + [(f"ensemble ({result['combiner']})", ens)]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    width = 0.8 / len(series)
    for k, (name, pred) in enumerate(series):
        r = score(pred, y)["pcc"]
        lo, hi = percentile_ci(resampled_pcc(pred, y, counts))
        pos = np.arange(len(EMOTIONS)) + (k - (len(series) - 1) / 2) * width
        vals = np.array([r[e] for e in EMOTIONS])
        ax.bar(pos, vals, width, label=name, color="black" if k == len(series) - 1 else None, alpha=0.85)
        ax.errorbar(pos, vals, yerr=[vals - lo, hi - vals], fmt="none", ecolor="grey", lw=0.8, capsize=1.5)
    ax.set_xticks(np.arange(len(EMOTIONS)), EMOTIONS, fontsize=8)
    ax.set_ylabel(f"{split} PCC")
    ax.legend(fontsize=6, ncol=min(4, len(series)))
    fig.tight_layout()
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)
