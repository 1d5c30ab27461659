"""Is A better than B? A paired bootstrap over the same videos (`eri.training.metrics.paired_bootstrap`).

A and B are run directories (``tools/train.py``) or ensemble directories (``tools/ensemble.py``):
both hold ``predictions_<split>.csv`` and say which dataset they were scored on. They must cover
exactly the same videos of that split (the same store and split; for cross-validated ensembles the
same fold pool): anything else is refused, since a PCC difference over different videos mixes the
models with the samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eri.data.labels import labels_of
from eri.errors import InputError
from eri.training.metrics import paired_bootstrap, score
from eri.training.run import predictions


def dataset_of(run: Path) -> dict:
    """``{root, layout}`` a run or ensemble directory was scored on."""
    from eri.config import load_config

    if (run / "metrics.json").is_file() and (run / "members.csv").is_file():  # an ensemble
        return json.loads((run / "metrics.json").read_text())["data"]
    if not (run / "config.yaml").is_file():
        raise InputError(f"{run}: neither a run directory nor an ensemble directory (no config.yaml)")
    cfg = load_config(run / "config.yaml")
    return {"root": cfg.data.root, "layout": cfg.data.layout}


def compare(a: str | Path, b: str | Path, split: str = "test", resamples: int = 1000, seed: int = 0) -> dict:
    """A minus B: mean PCC and per emotion, each with its 95% interval and p-value."""
    a, b = Path(a), Path(b)
    pa, pb = predictions(a, split), predictions(b, split)
    only_a, only_b = sorted(set(pa.index) - set(pb.index)), sorted(set(pb.index) - set(pa.index))
    if only_a or only_b:
        raise InputError(
            f"{a} and {b} do not cover the same {split} videos ({len(only_a)} only in A, e.g. {only_a[:3]}; "
            f"{len(only_b)} only in B, e.g. {only_b[:3]}): compare models scored on the same store and split"
        )
    da, db = dataset_of(a), dataset_of(b)
    if Path(da["root"]).resolve() != Path(db["root"]).resolve():
        raise InputError(f"{a} was scored on {da['root']} and {b} on {db['root']}: not the same videos")
    ids = sorted(pa.index)
    y = labels_of(da["root"], da.get("layout", "auto"), ids)
    if np.isnan(y).any():
        raise InputError(f"{int(np.isnan(y).any(axis=1).sum())} of the {split} videos have no labels: nothing to compare on")
    xa, xb = pa.loc[ids].to_numpy(), pb.loc[ids].to_numpy()
    res = paired_bootstrap(xa, xb, y, resamples, seed)
    caution = [f"{r}: {why}" for r in (a, b) if (why := optimistic(r, split))]
    return {"a": str(a), "b": str(b), "split": split, "videos": len(ids), "caution": caution,
            "a_mean_pcc": score(xa, y)["mean_pcc"], "b_mean_pcc": score(xb, y)["mean_pcc"], **res}


def optimistic(run: Path, split: str) -> str | None:
    """Why ``run``'s scores on ``split`` are optimistic (it chose something on those videos), or None."""
    if split != "val":
        return None
    if (run / "members.csv").is_file():
        return json.loads((run / "metrics.json").read_text())["val"].get("optimistic")
    from eri.config import load_config

    cv = load_config(run / "config.yaml").data.cv
    return None if cv.folds and cv.select == "last" else "its best epoch was chosen on val"


def format_comparison(res: dict) -> str:
    m = res["mean_pcc"]
    lines = [f"A = {res['a']}\nB = {res['b']}\n{res['split']}, {res['videos']} videos, paired bootstrap "
             f"({res['resamples']} resamples, seed {res['seed']})",
             f"{'':<15}{'A - B':>9}{'95% CI':>22}{'p':>8}"]
    for name, s in [("mean PCC", m), *res["pcc"].items()]:
        lines.append(f"{name:<15}{s['diff']:>+9.4f}   [{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}]{s['p']:>8.3f}"
                     + ("  *" if s["excludes_0"] else ""))
    verdict = "A is better" if m["ci"][0] > 0 else "B is better" if m["ci"][1] < 0 else "within the noise: no difference established"
    lines.append(f"mean PCC: A {res['a_mean_pcc']:.4f}, B {res['b_mean_pcc']:.4f}; {verdict}  (* interval excludes 0)")
    lines += [f"caution: {c}: prefer --split test" for c in res.get("caution", [])]
    return "\n".join(lines)
