"""The linear-probe calibration check: ridge on mean- vs peak-pooled features, per stream and all together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from eri.constants import EMOTIONS
from eri.data.store import FeatureStore
from eri.data.synthetic.knobs import ALL_STREAMS
from eri.data.synthetic.labels import mean_pearson


# --------------------------------------------------------------------------------------- calibration
def pooled_features(root: str | Path, stream: str, ids) -> tuple[np.ndarray, np.ndarray]:
    """Masked mean (n, D) and peak (n, 2D) pooling over the valid steps of each video; peak pooling is the
    per-dimension max minus median, then median minus min (events may push a feature down)."""
    store = FeatureStore(root)
    d = store.stream_meta(stream).dim
    mean = np.zeros((len(ids), d), np.float32)
    peak = np.zeros((len(ids), 2 * d), np.float32)
    for i, vid in enumerate(ids):
        f, v = store.load(stream, vid)
        f = f[v] if v.any() else f[:1] * 0
        mean[i] = f.mean(axis=0)
        med = np.median(f, axis=0)
        peak[i, :d] = f.max(axis=0) - med
        peak[i, d:] = med - f.min(axis=0)
    return mean, peak


def ridge_score(x: np.ndarray, y: np.ndarray, split: np.ndarray, alphas=None) -> dict:
    """Ridge fit on train (alpha chosen on val by mean Pearson r), score on test with the mean-of-7 r."""
    alphas = np.logspace(-1, 6, 22) if alphas is None else alphas
    tr, va, te = (split == "train"), (split == "val"), (split == "test")
    mu, sd = x[tr].mean(axis=0), x[tr].std(axis=0) + 1e-6
    z = (x - mu) / sd
    ym = y[tr].mean(axis=0)
    w_eig, v = np.linalg.eigh(z[tr].T @ z[tr])
    proj = v.T @ (z[tr].T @ (y[tr] - ym))
    best = None
    for a in alphas:
        w = v @ (proj / (w_eig + a)[:, None])
        r = mean_pearson(z[va] @ w, y[va])
        if best is None or r > best[0]:
            best = (r, a, w)
    r_val, a, w = best
    return {"val": round(r_val, 4), "test": round(mean_pearson(z[te] @ w, y[te]), 4), "alpha": float(a)}


def proxy_scores(root: str | Path, streams=ALL_STREAMS) -> pd.DataFrame:
    """Linear-probe check that the information is there: per stream and all streams concatenated, ridge on
    (a) masked mean pooling and (b) max-minus-median ("peak") pooling; test mean Pearson r against the
    noisy labels, and that score as a fraction of the test ceiling."""
    root = Path(root)
    info = pd.read_csv(root / "data_info.csv", dtype={"File_ID": str})
    ids = info["File_ID"].str.strip("[]").tolist()
    split = info["Split"].str.lower().to_numpy()
    y = info[list(EMOTIONS)].to_numpy(float)
    ceiling = json.loads((root / "synthetic.json").read_text())["ceiling"]["test"]
    feats = {s: pooled_features(root, s, ids) for s in streams}
    rows = []
    for name, parts in [(s, [s]) for s in streams] + [("all", list(streams))]:
        for k, pool in enumerate(("mean", "peak")):
            x = np.concatenate([feats[s][k] for s in parts], axis=1).astype(np.float64)
            r = ridge_score(x, y, split)
            rows.append({"streams": name, "pool": pool, **r, "of_ceiling": round(r["test"] / ceiling, 3)})
    return pd.DataFrame(rows)
