"""Is A better than B? A paired bootstrap over the same videos (`eri.training.metrics.paired_bootstrap`).

A and B are run directories (``tools/train.py``) or ensemble directories (``tools/ensemble.py``),
read through `eri.runs`: both hold ``predictions_<split>.csv``, the labels they were scored on and
the signature of their dataset, so the comparison needs neither data root. They must cover
exactly the same videos of that split (the same store and split; for cross-validated ensembles the
same fold pool): anything else is refused, since a PCC difference over different videos mixes the
models with the samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eri.data.signature import differences
from eri.errors import InputError
from eri.runs import open_run
from eri.training.metrics import paired_bootstrap, score


def same_data(a, b) -> None:
    """Refuse two runs (`eri.runs.open_run`) scored on different data. Their signatures are compared by
    content (labels, splits, features: a moved dataset is the same dataset); runs written before they
    recorded one fall back to their data roots."""
    sa, sb = a.signature(), b.signature()
    if sa is not None and sb is not None:
        diff = differences(sa, sb, common_streams=True)
        if diff:
            raise InputError(f"{a.path} and {b.path} were scored on different data: {'; '.join(diff)}")
    elif Path(a.root).resolve() != Path(b.root).resolve():
        raise InputError(f"{a.path} was scored on {a.root} and {b.path} on {b.root}: not the same videos")


def compare(a: str | Path, b: str | Path, split: str = "test", resamples: int = 1000, seed: int = 0) -> dict:
    """A minus B: mean PCC and per emotion, each with its 95% interval and p-value. Labels come from
    the runs themselves (their ``labels.csv``), so the data root may have moved or gone."""
    ra, rb = open_run(a), open_run(b)
    pa, pb = ra.predictions(split), rb.predictions(split)
    only_a, only_b = sorted(set(pa.index) - set(pb.index)), sorted(set(pb.index) - set(pa.index))
    if only_a or only_b:
        raise InputError(
            f"{a} and {b} do not cover the same {split} videos ({len(only_a)} only in A, e.g. {only_a[:3]}; "
            f"{len(only_b)} only in B, e.g. {only_b[:3]}): compare models scored on the same store and split"
        )
    same_data(ra, rb)
    ids = sorted(pa.index)
    y = ra.labels(ids)
    if np.isnan(y).any():
        raise InputError(f"{int(np.isnan(y).any(axis=1).sum())} of the {split} videos have no labels: nothing to compare on")
    xa, xb = pa.loc[ids].to_numpy(), pb.loc[ids].to_numpy()
    res = paired_bootstrap(xa, xb, y, resamples, seed)
    caution = [f"{r.path}: {why}" for r in (ra, rb) if (why := r.optimistic(split))]
    return {"a": str(a), "b": str(b), "split": split, "videos": len(ids), "caution": caution,
            "a_mean_pcc": score(xa, y)["mean_pcc"], "b_mean_pcc": score(xb, y)["mean_pcc"], **res}


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
