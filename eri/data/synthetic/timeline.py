"""One video's event timeline: what every rendering of a synthetic video shares.

The feature streams (`generator._video`) and the face videos (`faces`) of a video are drawn from the same
timeline, so their labels and ceiling are the same: the emotion events (raised-cosine bumps whose peak
carries the intensity), talking, head motion, the frames with a face, and the per-stream noise multipliers,
all from ``np.random.default_rng([seed, video_index])`` in a fixed order (changing it would change every
generated dataset: `tests/test_synthetic.py` and a byte comparison of ``tiny`` guard it).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from eri.constants import EMOTIONS


def bumps(t: np.ndarray, centre: np.ndarray, width: np.ndarray) -> np.ndarray:
    """(n_events, len(t)) raised-cosine bumps of peak 1 and full width ``width``."""
    x = (t[None, :] - centre[:, None]) / width[:, None]
    return np.where(np.abs(x) < 0.5, 0.5 * (1.0 + np.cos(2 * np.pi * x)), 0.0)


def segments(t: np.ndarray, start: np.ndarray, length: np.ndarray, edge: float = 0.15) -> np.ndarray:
    """Sum over segments of smooth boxes (ramps of ``edge`` s), clipped to [0, 1]; shape (len(t),)."""
    if len(start) == 0:
        return np.zeros_like(t)
    up = np.clip((t[None, :] - start[:, None]) / edge, 0, 1)
    down = np.clip((start[:, None] + length[:, None] - t[None, :]) / edge, 0, 1)
    return np.clip((up * down).sum(axis=0), 0, 1)


def valid_mask(rng, knobs: dict, n: int, low: bool) -> np.ndarray:
    valid = np.ones(n, dtype=bool)
    if low:
        lo, hi = knobs["low_valid_frames"]
        k = int(rng.integers(lo, hi + 1))
        k = min(k, n)
        start = int(rng.integers(0, n - k + 1))
        valid[:] = False
        valid[start : start + k] = True
        return valid
    b_lo, b_hi = knobs["noface_burst"]
    n_bursts = rng.poisson(knobs["noface_frac"] * n / ((b_lo + b_hi) / 2))
    starts = rng.integers(0, n, n_bursts)
    lens = rng.integers(b_lo, b_hi + 1, n_bursts)
    idx = np.arange(n)
    if n_bursts:
        valid &= ~((idx[None, :] >= starts[:, None]) & (idx[None, :] < (starts + lens)[:, None])).any(axis=0)
    return valid


def timeline(row, knobs: dict, seed: int) -> SimpleNamespace:
    """The per-video draws every rendering of a video shares (its feature streams, its face video): the
    expressive events, talking, head motion, the frames with a face and the noise multipliers, in the
    order `generator._video` has always drawn them. ``rng`` is left where the per-stream draws continue."""
    rng = np.random.default_rng([seed, int(row["index"])])
    ne = len(EMOTIONS)
    y = np.array([row["y_" + e] for e in EMOTIONS])
    dur, fps, n_fr = float(row["duration"]), float(row["fps"]), int(row["n_frames"])
    t_fr = np.arange(n_fr) / fps

    # expressive events: >= 1 per present emotion; count and duration independent of intensity
    counts = 1 + rng.poisson(knobs["event_extra_mean"] * float(row["rate_mult"]), ne)
    counts[y <= 0] = 0
    emo = np.repeat(np.arange(ne), counts)
    n_ev = len(emo)
    width = rng.uniform(knobs["event_dur_min"], knobs["event_dur_max"], n_ev)
    centre = rng.uniform(width / 4, dur - width / 4)
    onehot = np.zeros((n_ev, ne))
    onehot[np.arange(n_ev), emo] = 1.0

    def activation(gains, bumps, jitter_sd):
        """(T, 7) per-emotion activation: each event's bump times its emotion's gain, ``y`` and a jitter."""
        jit = np.maximum(1.0 + jitter_sd * rng.standard_normal(n_ev), 0.0)
        amp = np.asarray(gains)[emo] * y[emo] * jit
        return bumps.T @ (onehot * amp[:, None])

    # nuisances: talking segments (with a ~4.5 Hz syllable modulation) and slow head motion
    n_talk = rng.poisson(knobs["talk_rate"] * dur * float(row["talkativeness"]))
    t_len = rng.uniform(*knobs["talk_dur"], n_talk)
    t_start = rng.uniform(-0.5, dur, n_talk)
    talk_amp = rng.uniform(0.5, 1.0)
    syl_f, syl_ph = rng.uniform(3.5, 5.5), rng.uniform(0, 2 * np.pi)
    ph_f, ph_ph = rng.uniform(1.5, 7.0, 3), rng.uniform(0, 2 * np.pi, 3)

    def talking(t):
        env = talk_amp * segments(t, t_start, t_len)
        mouth = env * (0.5 + 0.5 * np.sin(2 * np.pi * syl_f * t + syl_ph))
        phon = env[:, None] * np.sin(2 * np.pi * ph_f[None, :] * t[:, None] + ph_ph[None, :])
        return mouth, phon

    head_f = rng.uniform(0.05, 0.6, (3, 3))
    head_a = knobs["head_motion_amp"] * rng.uniform(0.2, 1.0, (3, 3)) / np.sqrt(3)
    head_ph = rng.uniform(0, 2 * np.pi, (3, 3))
    head = (head_a[None] * np.sin(2 * np.pi * head_f[None] * t_fr[:, None, None] + head_ph[None])).sum(axis=2)

    valid = valid_mask(rng, knobs, n_fr, bool(row["low_valid"]))
    noise_mult = np.exp(knobs["noise_scale_sd"] * rng.standard_normal(4))
    return SimpleNamespace(rng=rng, y=y, dur=dur, n_frames=n_fr, t_fr=t_fr, emo=emo, width=width, centre=centre,
                           activation=activation, talking=talking, head=head, valid=valid, noise_mult=noise_mult)
