"""Pearson's r per column, the one implementation: the challenge metric (`eri.training.metrics`) and
the synthetic generator's ceilings (`eri.data.synthetic.labels`) both use it, so a ceiling and a score
are the same statistic. Float64; a column with zero variance has no r: ``constant`` marks it, r = 0."""

from __future__ import annotations

import numpy as np


def pearson_columns(pred, target) -> tuple[np.ndarray, np.ndarray]:
    """``(r, constant)``: Pearson's r of each column of ``pred`` (N, K) against ``target`` (N, K), in
    [-1, 1], and which columns are constant in either (their r is 0)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    p, t = pred - pred.mean(0), target - target.mean(0)
    den = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    constant = den == 0
    r = np.divide((p * t).sum(0), den, out=np.zeros(pred.shape[1]), where=~constant)
    return np.clip(r, -1.0, 1.0), constant
