"""The challenge metric: per-emotion Pearson r over all videos of a split, and their mean.

Computed once per split on the gathered predictions of every rank (never averaged per batch or
per rank, which gives a different, wrong number), in float64. Matches ``scipy.stats.pearsonr``
per column. A constant column (predictions or labels) has no defined r: it scores 0.0 and warns.
"""

from __future__ import annotations

import warnings

import numpy as np

from eri.constants import EMOTIONS


def pcc_per_emotion(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred and target must both be (N, K); got {pred.shape} and {target.shape}")
    if len(pred) < 2:
        raise ValueError(f"Pearson r needs at least 2 videos, got {len(pred)}")
    p, t = pred - pred.mean(0), target - target.mean(0)
    den = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    constant = den == 0
    if constant.any():
        names = [EMOTIONS[i] if pred.shape[1] == len(EMOTIONS) else str(i) for i in np.flatnonzero(constant)]
        warnings.warn(f"constant predictions or labels for {names}: Pearson r undefined, scored as 0.0", stacklevel=2)
    r = np.divide((p * t).sum(0), den, out=np.zeros(pred.shape[1]), where=~constant)
    return np.clip(r, -1.0, 1.0)


def score(pred: np.ndarray, target: np.ndarray) -> dict:
    """``{"mean_pcc": x, "pcc": {emotion: r}}``, the shape written to metrics.json."""
    r = pcc_per_emotion(pred, target)
    return {"mean_pcc": float(r.mean()), "pcc": {e: float(v) for e, v in zip(EMOTIONS, r)}}


def format_table(results: dict[str, dict], ceiling: dict | None = None) -> str:
    """A per-emotion table, one column per split."""
    splits = list(results)
    lines = [f"{'emotion':<15}" + "".join(f"{s:>10}" for s in splits)]
    for e in EMOTIONS:
        lines.append(f"{e:<15}" + "".join(f"{results[s]['pcc'][e]:>10.4f}" for s in splits))
    lines.append(f"{'mean PCC':<15}" + "".join(f"{results[s]['mean_pcc']:>10.4f}" for s in splits))
    if ceiling:
        lines.append(f"{'ceiling':<15}" + "".join(f"{ceiling.get(s, float('nan')):>10.4f}" for s in splits))
        lines.append(
            f"{'% of ceiling':<15}" + "".join(f"{100 * results[s]['mean_pcc'] / ceiling[s]:>9.1f}%" if s in ceiling else f"{'':>10}" for s in splits)
        )
    return "\n".join(lines)
