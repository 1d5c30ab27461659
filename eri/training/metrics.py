"""The challenge metric: per-emotion Pearson r over all videos of a split, and their mean.

Computed once per split on the gathered predictions of every rank (never averaged per batch or
per rank, which gives a different, wrong number), in float64. Matches ``scipy.stats.pearsonr``
per column. A constant column (predictions or labels) has no defined r: it scores 0.0 and warns.
"""

from __future__ import annotations

import warnings

import numpy as np

from eri.constants import EMOTIONS
from eri.stats import pearson_columns


def pcc_per_emotion(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred and target must both be (N, K); got {pred.shape} and {target.shape}")
    if len(pred) < 2:
        raise ValueError(f"Pearson r needs at least 2 videos, got {len(pred)}")
    r, constant = pearson_columns(pred, target)
    if constant.any():
        names = [EMOTIONS[i] if pred.shape[1] == len(EMOTIONS) else str(i) for i in np.flatnonzero(constant)]
        warnings.warn(f"constant predictions or labels for {names}: Pearson r undefined, scored as 0.0", stacklevel=2)
    return r


def nonfinite(pred: np.ndarray) -> str | None:
    """Why predictions cannot be scored (None: all finite). Never scored as a number: a NaN r would
    print as a result, and a bootstrap over it as a "0.0000 to 0.0000" interval."""
    bad = ~np.isfinite(np.asarray(pred, np.float64)).all(axis=1)
    if not bad.any():
        return None
    return (f"{int(bad.sum())} of {len(bad)} videos have NaN or infinite predictions (the model diverged, or its "
            "input holds non-finite values): not a score")


def score(pred: np.ndarray, target: np.ndarray) -> dict:
    """``{"mean_pcc": x, "pcc": {emotion: r}}``, the shape written to metrics.json."""
    r = pcc_per_emotion(pred, target)
    return {"mean_pcc": float(r.mean()), "pcc": {e: float(v) for e, v in zip(EMOTIONS, r)}}


def format_table(results: dict[str, dict], ceiling: dict | None = None) -> str:
    """A per-emotion table, one column per split."""
    splits = [s for s in results if np.isfinite(results[s]["mean_pcc"])]  # NaN is never shown as a result
    lines = [f"{'emotion':<15}" + "".join(f"{s:>10}" for s in splits)]
    for e in EMOTIONS:
        lines.append(f"{e:<15}" + "".join(f"{results[s]['pcc'][e]:>10.4f}" for s in splits))
    lines.append(f"{'mean PCC':<15}" + "".join(f"{results[s]['mean_pcc']:>10.4f}" for s in splits))
    if all("ci95" in results[s] for s in splits):
        cis = ", ".join(f"{s} {results[s]['ci95']['mean_pcc'][0]:.4f} to {results[s]['ci95']['mean_pcc'][1]:.4f}" for s in splits)
        lines.append(f"mean PCC 95% CI (bootstrap over videos): {cis}")
    ceiling = {s: c for s, c in (ceiling or {}).items() if c is not None}  # none for a split too small to have one
    if ceiling:
        lines.append(f"{'ceiling':<15}" + "".join(f"{ceiling.get(s, float('nan')):>10.4f}" for s in splits))
        lines.append(
            f"{'% of ceiling':<15}" + "".join(f"{100 * results[s]['mean_pcc'] / ceiling[s]:>9.1f}%" if s in ceiling else f"{'':>10}" for s in splits)
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- bootstrap over videos
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE = 1000, 0, 0.95


def bootstrap_counts(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(resamples, n) float64: how often each video appears in each resample. The indices are drawn as
    ``np.random.default_rng(seed).integers(0, n, (resamples, n))``, exactly as ``scipy.stats.bootstrap``
    draws them from the same generator, so both see the same resamples."""
    idx = np.random.default_rng(seed).integers(0, n, (resamples, n))
    return np.bincount((idx + n * np.arange(resamples)[:, None]).ravel(), minlength=resamples * n).reshape(
        resamples, n).astype(np.float64)


def resampled_pcc(pred: np.ndarray, target: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(resamples, K) Pearson r of every resample: frequency-weighted moments as matrix products (no
    per-resample loop, no (resamples, n, K) copy). A constant column in a resample scores 0, as in `score`."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    pred, target = pred - pred.mean(0), target - target.mean(0)  # shift invariant; less cancellation
    n = counts.sum(1, keepdims=True)
    mx, my = counts @ pred / n, counts @ target / n
    sxx = counts @ (pred * pred) / n - mx * mx
    syy = counts @ (target * target) / n - my * my
    sxy = counts @ (pred * target) / n - mx * my
    den = np.sqrt(np.clip(sxx, 0, None) * np.clip(syy, 0, None))
    ok = den > 1e-12 * (np.abs(sxx) + np.abs(syy) + 1e-300)
    return np.clip(np.divide(sxy, den, out=np.zeros_like(sxy), where=ok), -1.0, 1.0)


def percentile_ci(samples: np.ndarray, confidence: float = CONFIDENCE) -> np.ndarray:
    """(2, ...) percentile interval along axis 0 (linear interpolation, as scipy.stats.bootstrap)."""
    alpha = (1 - confidence) / 2
    return np.quantile(samples, [alpha, 1 - alpha], axis=0)


def bootstrap_ci(pred, target, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 confidence: float = CONFIDENCE) -> dict:
    """95% percentile bootstrap intervals over videos, for each emotion's PCC and for the mean PCC:
    ``{"mean_pcc": [lo, hi], "pcc": {emotion: [lo, hi]}, "resamples", "seed", "confidence"}``."""
    why = nonfinite(pred)
    if why:
        raise ValueError(f"bootstrap_ci: {why}")
    r = resampled_pcc(pred, target, bootstrap_counts(len(pred), resamples, seed))
    per, mean = percentile_ci(r, confidence), percentile_ci(r.mean(1), confidence)
    names = EMOTIONS if r.shape[1] == len(EMOTIONS) else [str(i) for i in range(r.shape[1])]
    return {"mean_pcc": [float(mean[0]), float(mean[1])],
            "pcc": {e: [float(per[0, i]), float(per[1, i])] for i, e in enumerate(names)},
            "resamples": resamples, "seed": seed, "confidence": confidence}


def paired_bootstrap(pred_a, pred_b, target, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     confidence: float = CONFIDENCE) -> dict:
    """A minus B on the same resampled videos: the difference in mean PCC and per emotion, its
    percentile interval and a two-sided p-value, p = min(1, 2 min(#{d <= 0} + 1, #{d >= 0} + 1) / (B + 1))
    (the smallest two-sided level at which the percentile interval excludes 0). ``pred_a``/``pred_b`` may
    be (S, N, K), one model per seed: the difference is then between the seed-averaged PCCs."""
    pa, pb = (np.asarray(p, np.float64) for p in (pred_a, pred_b))
    pa, pb = (p[None] if p.ndim == 2 else p for p in (pa, pb))
    counts = bootstrap_counts(len(target), resamples, seed)

    def seed_mean(preds, fn):
        return np.mean([fn(p) for p in preds], axis=0)

    da = seed_mean(pa, lambda p: resampled_pcc(p, target, counts)) - seed_mean(pb, lambda p: resampled_pcc(p, target, counts))
    point = seed_mean(pa, lambda p: pcc_per_emotion(p, target)) - seed_mean(pb, lambda p: pcc_per_emotion(p, target))

    def summary(d: np.ndarray, x: float) -> dict:
        lo, hi = percentile_ci(d, confidence)
        p = min(1.0, 2 * min((d <= 0).sum() + 1, (d >= 0).sum() + 1) / (len(d) + 1))
        return {"diff": float(x), "ci": [float(lo), float(hi)], "p": float(p), "excludes_0": bool(lo > 0 or hi < 0)}

    return {"mean_pcc": summary(da.mean(1), point.mean()),
            "pcc": {e: summary(da[:, i], point[i]) for i, e in enumerate(EMOTIONS[: da.shape[1]])},
            "resamples": resamples, "seed": seed, "confidence": confidence}
