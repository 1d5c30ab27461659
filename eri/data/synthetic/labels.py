"""Labels with Hume-Reaction's published statistics, and their ceiling (see the package docstring)."""

from __future__ import annotations

import numpy as np

from eri.constants import EMOTIONS
from eri.data.synthetic.knobs import PRESETS
from eri.stats import pearson_columns


# --------------------------------------------------------------------------------------------- labels
def _corr_matrix(pairs, scale: float = 1.0) -> np.ndarray:
    r = np.eye(len(EMOTIONS))
    for a, b, v in pairs:
        i, j = EMOTIONS.index(a), EMOTIONS.index(b)
        r[i, j] = r[j, i] = float(v) * scale
    return r


def sample_labels(n: int, rng: np.random.Generator, knobs: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` videos' (noiseless targets ``y``, noisy labels), both (n, 7) float64 in [0, 1].

    Latent ``z ~ N(label_log_mean, label_log_sd^2 R)``; intensity ``u = max(exp(z) - floor, 0)``;
    ``y = u / max(u)``. Self-report ``v = max(exp(z + report_noise * e) - floor, 0)`` with ``e`` correlated
    like the latent (scaled by ``report_noise_corr``); ``label = v / max(v)``. A row whose intensities are all
    0 gets a 1 at its largest latent (a report always has a largest emotion).
    """
    k = knobs if knobs is not None else PRESETS["tiny"]
    lat = np.linalg.cholesky(_corr_matrix(k["label_corr"]))
    rc = float(k["report_noise_corr"])
    noise_r = rc * _corr_matrix(k["label_corr"]) + (1 - rc) * np.eye(len(EMOTIONS))
    lno = np.linalg.cholesky(noise_r)
    mu = np.asarray(k["label_log_mean"], float)
    z = mu + k["label_log_sd"] * (rng.standard_normal((n, len(EMOTIONS))) @ lat.T)
    zr = z + k["report_noise"] * (rng.standard_normal((n, len(EMOTIONS))) @ lno.T)
    rows = np.arange(n)

    def normalise(latent):
        u = np.maximum(np.exp(latent) - k["label_floor"], 0.0)
        dead = u.max(axis=1) <= 0
        u[rows[dead], latent[dead].argmax(axis=1)] = 1.0
        return u / u.max(axis=1, keepdims=True)

    return normalise(z), normalise(zr)


def label_stats(labels: np.ndarray) -> dict:
    labels = np.asarray(labels, float)
    a, f = EMOTIONS.index("Anxiety"), EMOTIONS.index("Fear")
    return {
        "means": {e: round(float(m), 4) for e, m in zip(EMOTIONS, labels.mean(axis=0))},
        "zero_fraction": round(float((labels == 0).any(axis=1).mean()), 4),
        "anxiety_fear_r": round(float(np.corrcoef(labels[:, a], labels[:, f])[0, 1]), 4),
        "n": int(len(labels)),
    }


def mean_pearson(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over columns of Pearson's r (`eri.stats`; columns with zero variance count as r = 0)."""
    return float(pearson_columns(pred, target)[0].mean())
