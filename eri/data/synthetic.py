"""A synthetic Hume-Reaction-like dataset, written in exactly the layout real feature extraction writes.

Why it exists: the real data cannot be shipped, yet every part of ``eri`` (loading, batching with masks,
the per-stream encoders, fusion, the metric) must be exercised end to end, in tests and in the demo,
on data whose difficulties are the real ones. The generator therefore reproduces:

* **Labels** with the published statistics of Hume-Reaction (DESIGN.md "Dataset layouts"): values in
  [0, 1], each row's maximum exactly 1.0, about half of the rows holding a 0, train means near
  .32/.61/.35/.24/.21/.29/.53, Anxiety-Fear r ~ .73. A correlated log-normal latent gives per-video
  intensities ``u``; the *noiseless target* is ``y = u / max(u)``; the *label* is a noisy self-report of
  ``u`` (correlated report noise in log space, so raters confuse Anxiety and Fear) rescaled by its row
  maximum. The report noise caps what any model can reach: the **ceiling** (mean over emotions of the
  Pearson r between ``y`` and the labels) is recorded per split in ``synthetic.json``.
* **Sparse events**: emotion ``e`` shows as short bumps (``event_dur_min``..``event_dur_max`` s) on a neutral
  background. The bump *peak* carries the intensity (``~ y_e`` times a small per-stream jitter) while the
  number and the durations of the events are random and independent of the intensity, so averaging all
  frames dilutes and confounds the signal; a model that finds peaks does clearly better.
* **Complementary streams**: each stream sees each emotion with its own visibility, its own per-event
  amplitude jitter (independent across streams, so fusion averages it out), its own mixing and noise.
  No stream sees every emotion well: ``mma``, a basic-expression and AU model, sees Adoration, Anxiety
  and Empathic-Pain only weakly (no basic expression stands for them), AUs see the negative emotions,
  the holistic embedding Adoration, Amusement, Disgust and Surprise, audio Amusement, Fear and
  Surprise. So fusing streams beats any single one, as on the real task (paper 004, Table 2).
* **Nuisances**: talking (audio, mouth AUs 10/25/26, holistic), head motion (holistic), per-subject
  static offsets (identity; holistic, audio, AU baselines), frames without a face in short bursts (their
  features are garbage or zeros and ``valid`` is False) and about 1% of videos with < 50 valid frames.
* **Subject-disjoint splits** with many videos per subject.

Semantics where cheap: emotions drive the 7 basic expressions (Amusement/Adoration -> happiness,
Disgust -> disgust, Fear/Anxiety -> fear, Surprise -> surprise, Empathic-Pain -> sadness), and the
expressions drive the 17 AUs through the expression-AU table of DESIGN.md (plus a few emotion-specific
AUs so that e.g. Anxiety and Fear are not identical in AU space).

Determinism and resuming: the plan (splits, subjects, labels, durations) comes from global RNGs seeded by
``seed``; each video's arrays come from ``np.random.default_rng([seed, video_index])`` and the subject's
own RNG, so an interrupted run re-run with the same arguments skips the videos already written and ends
with byte-identical files (the store writes its zip containers with fixed timestamps).
``synthetic.json`` is written last and marks a complete dataset.

Entry points: :func:`generate`, :func:`ensure_synthetic`, :func:`sample_labels`, :func:`proxy_scores`;
command line: ``tools/make_synthetic.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from eri.constants import EMOTIONS, STREAMS
from eri.data.store import FeatureStore
from eri.errors import ConfigError
from eri.io import atomic_write_text

GENERATOR_VERSION = 2  # 2: mma sees Adoration, Anxiety, Empathic-Pain weakly (was 0.5 for all)

# Basic expressions of the MMA head, in its order; and the 17 AUs of the MMA head / OpenFace.
EXPRESSIONS = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
AU_IDS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 15, 17, 20, 23, 24, 25, 26)

# Expression-AU table (Du, Tao & Martinez 2014; prototypical and observational AUs both count as 1).
EXPRESSION_AUS = {
    "Happiness": (12, 25, 6),
    "Sadness": (4, 15, 1, 6, 11, 17),
    "Fear": (1, 4, 20, 25, 2, 5, 26),
    "Anger": (4, 7, 24, 10, 17, 23),
    "Surprise": (1, 2, 25, 26, 5),
    "Disgust": (9, 10, 17, 4, 24),
    "Neutral": (),
}

# Emotion -> expression weights (how strongly an event of the emotion shows as each basic expression).
EMOTION_EXPRESSIONS = {
    "Adoration": {"Happiness": 0.6},
    "Amusement": {"Happiness": 1.0},
    "Anxiety": {"Fear": 0.5, "Sadness": 0.2, "Anger": 0.2},
    "Disgust": {"Disgust": 1.0, "Anger": 0.2},
    "Empathic-Pain": {"Sadness": 1.0},
    "Fear": {"Fear": 1.0},
    "Surprise": {"Surprise": 1.0},
}
# Emotion-specific AUs on top of the expression route (so emotions sharing an expression still differ).
EMOTION_EXTRA_AUS = {
    "Adoration": {1: 0.4, 6: 0.3},  # soft smile, raised inner brows, lips mostly closed
    "Amusement": {6: 0.5, 26: 0.5},  # cheek raise, jaw drop (laughing)
    "Anxiety": {4: 0.4, 23: 0.5, 24: 0.5, 17: 0.3},  # brow lowering, lip tightening / pressing
    "Disgust": {9: 0.4, 10: 0.3},
    "Empathic-Pain": {4: 0.4, 7: 0.5, 6: 0.2},  # pain: brow lowering, lid tightening
    "Fear": {5: 0.5, 20: 0.5},  # upper lid raise, lip stretch
    "Surprise": {5: 0.5},
}
MOUTH_TALK_AUS = {25: 1.0, 26: 0.7, 10: 0.2}  # talking opens the mouth
VALENCE = {"Adoration": 0.8, "Amusement": 1.0, "Anxiety": -0.6, "Disgust": -0.8, "Empathic-Pain": -0.7,
           "Fear": -0.8, "Surprise": 0.2}
AROUSAL = {"Adoration": 0.2, "Amusement": 0.8, "Anxiety": 0.6, "Disgust": 0.4, "Empathic-Pain": 0.2,
           "Fear": 0.9, "Surprise": 0.9}

VISUAL_STREAMS = ("holistic", "au", "mma")
ALL_STREAMS = ("holistic", "au", "mma", "audio")
SPLIT_NAMES = {"train": "Train", "val": "Val", "test": "Test"}
MFCC_HOP_S = 256 / 16000  # 16 ms
MFCC_PER_TOKEN = 32
N_MFCC = 32
TOKEN_S = MFCC_PER_TOKEN * MFCC_HOP_S  # 0.512 s

_TAG = 4_000_000_000  # RNG stream tags above any video index
_TAG_PLAN, _TAG_MIX, _TAG_SUBJECT = _TAG + 1, _TAG + 2, _TAG + 3

# ---------------------------------------------------------------------------------------------- knobs
KNOB_DOCS: dict[str, str] = {
    "n_train": "number of Train videos",
    "n_val": "number of Val videos",
    "n_test": "number of Test videos (they carry labels: the synthetic test split is our benchmark)",
    "videos_per_subject": "mean videos per subject; splits are subject-disjoint (Hume: 25067 / 2222 ~ 11.3)",
    "duration_min": "shortest video in seconds",
    "duration_max": "longest video in seconds",
    "duration_beta": "Beta(a, b) shape of (duration - min) / (max - min); (1.5, 3) gives a mean of ~11.6 s",
    "fps_choices": "frame rates a video may have",
    "fps_probs": "probability of each frame rate in fps_choices",
    "us_fraction": "fraction of subjects from the United States (the rest: South Africa)",
    "age_range": "subject ages are uniform integers in [lo, hi]",
    "label_log_mean": "per-emotion mean of the log-normal latent (calibrated so train label means match Hume)",
    "label_log_sd": "sd of the log-normal latent (spread of true intensities across videos)",
    "label_floor": "intensities below this (in latent units) are 0: gives the rows holding a 0",
    "label_corr": "[emotion, emotion, r] pairs of the latent correlation (others 0); also used for report noise",
    "report_noise": "sd of the self-report noise in log space; sets the ceiling (target 0.6-0.7)",
    "report_noise_corr": "how much of the latent correlation the report noise shares (0: independent, 1: same)",
    "event_extra_mean": "mean of the Poisson number of extra events per present emotion (each has >= 1)",
    "event_rate_shape": "gamma shape of the per-video and per-subject multipliers of event_extra_mean (mean 1)",
    "event_dur_min": "shortest expressive event (s, full width of the raised-cosine bump)",
    "event_dur_max": "longest expressive event (s)",
    "visibility": "{stream: 7 gains}: how strongly each stream sees each emotion's events",
    "amp_jitter": "{stream: sd}: per-event, per-stream relative jitter of the event amplitude",
    "noise": "{stream: sd}: per-step feature noise of each stream (in its latent units)",
    "noise_scale_sd": "log-sd of a per-video, per-stream multiplier of the noise (recording quality)",
    "identity_scale": "{stream: sd}: per-subject static offset of each feature (holistic, audio, au baseline)",
    "talk_rate": "talking segments per second (times a per-subject talkativeness ~ gamma(2)/2)",
    "talk_dur": "[min, max] length of a talking segment in seconds",
    "talk_amp": "{stream: gain}: how strongly talking shows in each stream",
    "head_motion_amp": "amplitude of the slow head-motion channels (holistic only)",
    "noface_frac": "expected fraction of frames without a face (in bursts)",
    "noface_burst": "[min, max] frames of a no-face burst",
    "low_valid_frac": "fraction of videos per split with < 50 valid frames (at least one per split)",
    "low_valid_frames": "[min, max] valid frames of such a video (a contiguous stretch)",
    "au_gain": "AU intensity (0-5 scale) of an AU loading of 1 at activation 1",
    "au_occ_threshold": "AU occurrence = 1 where the noisy activation (intensity units) exceeds this",
    "mma_expr_gain": "logit gain of the MMA expression head per unit expression activation",
    "mma_neutral_logit": "logit of Neutral at rest (the other expressions are at 0)",
    "mma_au_gain": "logit gain of the MMA AU head per unit AU activation",
    "mma_au_bias": "logit offset of the MMA AU head at rest (negative: AUs mostly off)",
    "mma_va_gain": "gain inside tanh for valence and arousal",
    "mix_leak": "{stream: sd}: dense leakage of every source into every holistic dim / audio coefficient",
    "mix_free_frac": "fraction of holistic dims / MFCC coefficients owned by no source (identity + noise only)",
}

_BASE: dict = {
    "videos_per_subject": 11.3,
    "duration_min": 9.9,
    "duration_max": 15.0,
    "duration_beta": [1.5, 3.0],
    "fps_choices": [25.0, 29.97, 30.0],
    "fps_probs": [0.3, 0.35, 0.35],
    "us_fraction": 0.55,
    "age_range": [18, 70],
    "label_log_mean": [-1.199, -0.509, -1.128, -1.522, -1.605, -1.257, -0.68],
    "label_log_sd": 0.7,
    "label_floor": 0.1,
    "label_corr": [
        ["Adoration", "Amusement", 0.45], ["Anxiety", "Fear", 0.87], ["Anxiety", "Empathic-Pain", 0.4],
        ["Fear", "Empathic-Pain", 0.35], ["Disgust", "Empathic-Pain", 0.3], ["Disgust", "Anxiety", 0.25],
        ["Disgust", "Fear", 0.3], ["Surprise", "Fear", 0.3], ["Surprise", "Amusement", 0.25],
        ["Surprise", "Anxiety", 0.2], ["Adoration", "Empathic-Pain", 0.2],
    ],
    "report_noise": 0.6,
    "report_noise_corr": 1.0,
    "event_extra_mean": 0.5,
    "event_rate_shape": 1.5,
    "event_dur_min": 0.3,
    "event_dur_max": 1.5,
    "visibility": {
        #            Ado   Amu   Anx   Dis   EmP   Fear  Sur
        "holistic": [1.0, 1.0, 0.1, 0.9, 0.1, 0.15, 0.9],
        "au": [0.2, 0.6, 1.0, 1.0, 1.0, 1.0, 0.3],
        "mma": [0.3, 0.6, 0.35, 0.6, 0.25, 0.5, 0.6],
        "audio": [0.05, 1.0, 0.4, 0.2, 0.3, 0.9, 1.0],
    },
    "amp_jitter": {"holistic": 0.12, "au": 0.12, "mma": 0.12, "audio": 0.12},
    "noise": {"holistic": 0.05, "au": 0.03, "mma": 0.08, "audio": 0.1},
    "noise_scale_sd": 0.2,
    "identity_scale": {"holistic": 0.5, "audio": 0.5, "au": 0.3},
    "talk_rate": 0.12,
    "talk_dur": [0.8, 3.5],
    "talk_amp": {"holistic": 0.6, "au": 0.6, "mma": 0.6, "audio": 0.6},
    "head_motion_amp": 0.25,
    "noface_frac": 0.01,
    "noface_burst": [3, 15],
    "low_valid_frac": 0.01,
    "low_valid_frames": [15, 49],
    "au_gain": 3.0,
    "au_occ_threshold": 1.0,
    "mma_expr_gain": 4.0,
    "mma_neutral_logit": 2.0,
    "mma_au_gain": 5.0,
    "mma_au_bias": -2.5,
    "mma_va_gain": 1.5,
    "mix_leak": {"holistic": 0.1, "audio": 0.1},
    "mix_free_frac": 0.25,
}

PRESETS: dict[str, dict] = {
    # Tests: a few seconds to generate; few subjects per split.
    "tiny": {**copy.deepcopy(_BASE), "n_train": 40, "n_val": 16, "n_test": 16, "videos_per_subject": 4.0},
    # Demo: enough videos that a model learns something and the metric is stable.
    "hume-small": {**copy.deepcopy(_BASE), "n_train": 1600, "n_val": 500, "n_test": 500},
    # The real split sizes of Hume-Reaction (ABAW5).
    "hume-full": {**copy.deepcopy(_BASE), "n_train": 15806, "n_val": 4657, "n_test": 4604},
}
assert all(set(p) == set(KNOB_DOCS) for p in PRESETS.values()), "every knob needs a doc and a value"


def resolve_preset(preset: str, **overrides) -> dict:
    """The knob dict of ``preset`` with ``overrides`` applied (ValueError on unknown names)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset '{preset}'; valid presets: {', '.join(PRESETS)}")
    bad = sorted(set(overrides) - set(KNOB_DOCS))
    if bad:
        raise ConfigError(f"unknown synthetic knob(s) {bad}; valid knobs: {', '.join(KNOB_DOCS)}")
    knobs = copy.deepcopy(PRESETS[preset])
    knobs.update(copy.deepcopy(overrides))
    return knobs


def config_hash(knobs: dict, seed: int) -> str:
    blob = json.dumps({"preset": knobs, "seed": int(seed)}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


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
    """Mean over columns of Pearson's r (columns with zero variance count as r = 0)."""
    p = pred - pred.mean(axis=0)
    t = target - target.mean(axis=0)
    den = np.sqrt((p**2).sum(axis=0) * (t**2).sum(axis=0))
    r = np.where(den > 0, (p * t).sum(axis=0) / np.where(den > 0, den, 1.0), 0.0)
    return float(r.mean())


def calibrate_label_means(knobs: dict, targets=(0.32, 0.61, 0.35, 0.24, 0.21, 0.29, 0.53), n=100_000,
                          iters=150) -> list[float]:
    """Offline helper: the ``label_log_mean`` that makes the label means match ``targets`` (not used at
    generation time; its result is pasted into ``_BASE``)."""
    k = copy.deepcopy(knobs)
    mu = np.log(np.asarray(targets, float))
    for it in range(iters):
        k["label_log_mean"] = mu.tolist()
        _, lab = sample_labels(n, np.random.default_rng([it, 12345]), k)
        mu = mu + (np.log(targets) - np.log(lab.mean(axis=0)))
    return [round(float(m), 3) for m in mu]


# ----------------------------------------------------------------------------------------------- plan
def _plan(knobs: dict, seed: int) -> pd.DataFrame:
    """Per-video table: id, split, subject, demographics, targets, labels, duration, fps, frames."""
    # independent streams per component, so that changing one knob does not reshuffle the others
    rng, rng_demo, rng_rate, rng_lab, rng_vid = (np.random.default_rng([seed, _TAG_PLAN, k]) for k in range(5))
    sizes = {"train": int(knobs["n_train"]), "val": int(knobs["n_val"]), "test": int(knobs["n_test"])}
    n = sum(sizes.values())
    split = np.empty(n, dtype=object)
    split[rng.permutation(n)] = np.repeat(list(sizes), list(sizes.values()))
    subject = np.zeros(n, dtype=np.int64)
    low_valid = np.zeros(n, dtype=bool)
    first = 0
    for s, m in sizes.items():
        idx = np.flatnonzero(split == s)
        if m == 0:
            continue
        n_subj = int(np.clip(round(m / knobs["videos_per_subject"]), 1, m))
        own = np.concatenate([np.arange(n_subj), rng.integers(0, n_subj, m - n_subj)])
        subject[idx] = first + rng.permutation(own)
        first += n_subj
        k_low = max(1, int(round(knobs["low_valid_frac"] * m)))
        low_valid[rng.choice(idx, size=min(k_low, m), replace=False)] = True
    n_subjects = first
    ages = rng_demo.integers(knobs["age_range"][0], knobs["age_range"][1] + 1, n_subjects)
    us = rng_demo.random(n_subjects) < knobs["us_fraction"]
    subj_talk = rng_demo.gamma(2.0, 0.5, n_subjects)
    shape = knobs["event_rate_shape"]
    subj_rate = rng_rate.gamma(shape, 1.0 / shape, n_subjects)
    vid_rate = rng_rate.gamma(shape, 1.0 / shape, n)
    y, labels = sample_labels(n, rng_lab, knobs)
    a, b = knobs["duration_beta"]
    dur = knobs["duration_min"] + (knobs["duration_max"] - knobs["duration_min"]) * rng_vid.beta(a, b, n)
    fps = rng_vid.choice(np.asarray(knobs["fps_choices"], float), size=n, p=np.asarray(knobs["fps_probs"], float))
    plan = pd.DataFrame({
        "index": np.arange(n),
        "File_ID": [f"{i + 1:05d}" for i in range(n)],
        "split": split.astype(str),
        "subject": subject,
        "Age": ages[subject],
        "Country": np.where(us[subject], "United States", "South Africa"),
        "rate_mult": subj_rate[subject] * vid_rate,
        "talkativeness": subj_talk[subject],
        "duration": dur,
        "fps": fps,
        "n_frames": np.round(dur * fps).astype(int),
        "low_valid": low_valid,
    })
    for j, e in enumerate(EMOTIONS):
        plan["y_" + e] = y[:, j]
        plan["label_" + e] = labels[:, j]
    return plan


# ------------------------------------------------------------------------------------ global mixings
def _mixing(knobs: dict, seed: int) -> dict:
    rng = np.random.default_rng([seed, _TAG_MIX])
    ne = len(EMOTIONS)
    au_col = {a: i for i, a in enumerate(AU_IDS)}
    expr_au = np.zeros((len(EXPRESSIONS), len(AU_IDS)))
    for x, aus in EXPRESSION_AUS.items():
        expr_au[EXPRESSIONS.index(x), [au_col[a] for a in aus]] = 1.0
    emo_expr = np.zeros((ne, len(EXPRESSIONS)))
    extra = np.zeros((ne, len(AU_IDS)))
    for e, d in EMOTION_EXPRESSIONS.items():
        for x, w in d.items():
            emo_expr[EMOTIONS.index(e), EXPRESSIONS.index(x)] = w
    for e, d in EMOTION_EXTRA_AUS.items():
        for a, w in d.items():
            extra[EMOTIONS.index(e), au_col[a]] = w
    emo_au = np.clip(emo_expr @ expr_au, 0, 1) * 0.7 + extra
    emo_au /= emo_au.max(axis=1, keepdims=True)
    mouth = np.zeros(len(AU_IDS))
    for a, w in MOUTH_TALK_AUS.items():
        mouth[au_col[a]] = w

    def sparse(n_src, dim, leak):
        """Each non-free dim is owned by one source (loading ~U(0.7, 1.3)); every source leaks into all dims."""
        w = leak * rng.standard_normal((n_src, dim))
        owned = rng.permutation(dim)[: dim - int(round(knobs["mix_free_frac"] * dim))]
        w[np.arange(len(owned)) % n_src, owned] += rng.uniform(0.7, 1.3, len(owned))
        return w

    d_h = STREAMS["holistic"]["dim"]
    w_h = sparse(ne + 4, d_h, knobs["mix_leak"]["holistic"])
    w_a = sparse(ne + 4, N_MFCC, knobs["mix_leak"]["audio"])
    return {
        "emo_expr": emo_expr,
        "emo_au": emo_au,
        "mouth": mouth,
        "va": np.array([[VALENCE[e], AROUSAL[e]] for e in EMOTIONS]),
        # holistic: 7 emotion directions, then talk and 3 head-motion directions, each of unit RMS
        "hol_emo": w_h[:ne],
        "hol_nuis": w_h[ne:],
        # audio (per MFCC frame): 7 emotion spectra, then speech energy and 3 phonetic channels
        "aud_emo": w_a[:ne],
        "aud_talk": w_a[ne:],
    }


def _subject(knobs: dict, seed: int, subject: int) -> dict:
    rng = np.random.default_rng([seed, _TAG_SUBJECT, int(subject)])
    ids = knobs["identity_scale"]
    return {
        "holistic": ids["holistic"] * rng.standard_normal(STREAMS["holistic"]["dim"]),
        "audio": ids["audio"] * rng.standard_normal(N_MFCC),
        "au": ids["au"] * rng.random(len(AU_IDS)),
    }


# -------------------------------------------------------------------------------------------- a video
def _bumps(t: np.ndarray, centre: np.ndarray, width: np.ndarray) -> np.ndarray:
    """(n_events, len(t)) raised-cosine bumps of peak 1 and full width ``width``."""
    x = (t[None, :] - centre[:, None]) / width[:, None]
    return np.where(np.abs(x) < 0.5, 0.5 * (1.0 + np.cos(2 * np.pi * x)), 0.0)


def _segments(t: np.ndarray, start: np.ndarray, length: np.ndarray, edge: float = 0.15) -> np.ndarray:
    """Sum over segments of smooth boxes (ramps of ``edge`` s), clipped to [0, 1]; shape (len(t),)."""
    if len(start) == 0:
        return np.zeros_like(t)
    up = np.clip((t[None, :] - start[:, None]) / edge, 0, 1)
    down = np.clip((start[:, None] + length[:, None] - t[None, :]) / edge, 0, 1)
    return np.clip((up * down).sum(axis=0), 0, 1)


def _valid_mask(rng, knobs: dict, n: int, low: bool) -> np.ndarray:
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


def _video(row, knobs: dict, mix: dict, subj: dict, seed: int) -> dict[str, tuple]:
    """All four streams of one video: {stream: (features float16 (T, D), valid (T,), timestamps (T,))}."""
    rng = np.random.default_rng([seed, int(row["index"])])
    ne = len(EMOTIONS)
    y = np.array([row["y_" + e] for e in EMOTIONS])
    dur, fps, n_fr = float(row["duration"]), float(row["fps"]), int(row["n_frames"])
    t_fr = np.arange(n_fr) / fps
    n_mfcc = 1 + int(round(dur * 16000)) // 256
    n_tok = n_mfcc // MFCC_PER_TOKEN
    t_mf = np.arange(n_tok * MFCC_PER_TOKEN) * MFCC_HOP_S

    # expressive events: >= 1 per present emotion; count and duration independent of intensity
    counts = 1 + rng.poisson(knobs["event_extra_mean"] * float(row["rate_mult"]), ne)
    counts[y <= 0] = 0
    emo = np.repeat(np.arange(ne), counts)
    n_ev = len(emo)
    width = rng.uniform(knobs["event_dur_min"], knobs["event_dur_max"], n_ev)
    centre = rng.uniform(width / 4, dur - width / 4)
    onehot = np.zeros((n_ev, ne))
    onehot[np.arange(n_ev), emo] = 1.0
    b_fr = _bumps(t_fr, centre, width)  # (n_ev, T)
    b_mf = _bumps(t_mf, centre, width)  # (n_ev, M)

    def activation(stream, bumps):
        jit = np.maximum(1.0 + knobs["amp_jitter"][stream] * rng.standard_normal(n_ev), 0.0)
        amp = np.asarray(knobs["visibility"][stream])[emo] * y[emo] * jit
        return bumps.T @ (onehot * amp[:, None])  # (T, 7)

    # nuisances: talking segments (with a ~4.5 Hz syllable modulation) and slow head motion
    n_talk = rng.poisson(knobs["talk_rate"] * dur * float(row["talkativeness"]))
    t_len = rng.uniform(*knobs["talk_dur"], n_talk)
    t_start = rng.uniform(-0.5, dur, n_talk)
    talk_amp = rng.uniform(0.5, 1.0)
    syl_f, syl_ph = rng.uniform(3.5, 5.5), rng.uniform(0, 2 * np.pi)
    ph_f, ph_ph = rng.uniform(1.5, 7.0, 3), rng.uniform(0, 2 * np.pi, 3)

    def talking(t):
        env = talk_amp * _segments(t, t_start, t_len)
        mouth = env * (0.5 + 0.5 * np.sin(2 * np.pi * syl_f * t + syl_ph))
        phon = env[:, None] * np.sin(2 * np.pi * ph_f[None, :] * t[:, None] + ph_ph[None, :])
        return mouth, phon

    head_f = rng.uniform(0.05, 0.6, (3, 3))
    head_a = knobs["head_motion_amp"] * rng.uniform(0.2, 1.0, (3, 3)) / np.sqrt(3)
    head_ph = rng.uniform(0, 2 * np.pi, (3, 3))
    head = (head_a[None] * np.sin(2 * np.pi * head_f[None] * t_fr[:, None, None] + head_ph[None])).sum(axis=2)

    valid = _valid_mask(rng, knobs, n_fr, bool(row["low_valid"]))
    noise_mult = np.exp(knobs["noise_scale_sd"] * rng.standard_normal(4))
    mouth_fr, _ = talking(t_fr)
    out = {}
    ts_fr = t_fr.astype(np.float32)

    # holistic (ResNet-like embedding): emotion directions + talk + head motion + identity + noise
    ta = knobs["talk_amp"]
    act = activation("holistic", b_fr)
    nuis = np.concatenate([ta["holistic"] * mouth_fr[:, None], head], axis=1)
    d_h = STREAMS["holistic"]["dim"]
    x = rng.standard_normal((n_fr, d_h), dtype=np.float32)
    x *= np.float32(knobs["noise"]["holistic"] * noise_mult[0])
    x += (np.concatenate([act, nuis], axis=1).astype(np.float32)
          @ np.concatenate([mix["hol_emo"], mix["hol_nuis"]]).astype(np.float32))
    x += subj["holistic"].astype(np.float32)
    n_bad = int((~valid).sum())
    x[~valid] = 3.0 * rng.standard_normal((n_bad, d_h), dtype=np.float32)  # no face: a crop of background
    out["holistic"] = (x.astype(np.float16), valid, ts_fr)

    # au (OpenFace-like): 17 intensities in [0, 5], then 17 binary occurrences
    act = activation("au", b_fr)
    au_act = act @ mix["emo_au"] + ta["au"] * mouth_fr[:, None] * mix["mouth"][None, :]
    sd = knobs["noise"]["au"] * noise_mult[1]
    g = knobs["au_gain"]
    inten = np.clip(subj["au"] + g * au_act + g * sd * rng.standard_normal(au_act.shape), 0, 5)
    occ = (g * au_act + g * sd * rng.standard_normal(au_act.shape)) > knobs["au_occ_threshold"]
    x = np.concatenate([inten, occ.astype(float)], axis=1)
    x[~valid] = 0.0
    out["au"] = (x.astype(np.float16), valid, ts_fr)

    # mma: valence, arousal, 7 expression probabilities, 17 AU probabilities
    act = activation("mma", b_fr)
    sd = knobs["noise"]["mma"] * noise_mult[2]
    va = np.tanh(knobs["mma_va_gain"] * (act @ mix["va"] + sd * rng.standard_normal((n_fr, 2))))
    logits = knobs["mma_expr_gain"] * (act @ mix["emo_expr"] + sd * rng.standard_normal((n_fr, len(EXPRESSIONS))))
    logits[:, 0] += knobs["mma_neutral_logit"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    au_act = act @ mix["emo_au"] + ta["mma"] * mouth_fr[:, None] * mix["mouth"][None, :]
    au_p = 1.0 / (1.0 + np.exp(-(knobs["mma_au_bias"] + knobs["mma_au_gain"] * (au_act + sd * rng.standard_normal(au_act.shape)))))
    au_p = np.clip(au_p, 0.001, 0.999)
    x = np.concatenate([va, probs, au_p], axis=1)
    x[~valid] = np.concatenate([[0.0, 0.0], np.full(len(EXPRESSIONS), 1 / len(EXPRESSIONS)), np.full(len(AU_IDS), 0.5)])
    out["mma"] = (x.astype(np.float16), valid, ts_fr)

    # audio: MFCC frames (32 coefficients) from emotion spectra + speech + identity + noise, stacked
    # 32 frames per token; token layout is (coefficient, frame) flattened, like librosa's (n_mfcc, frames).
    act = activation("audio", b_mf)
    mouth_mf, phon = talking(t_mf)
    speech = ta["audio"] * np.concatenate([mouth_mf[:, None], phon], axis=1)
    m = act @ mix["aud_emo"] + speech @ mix["aud_talk"] + subj["audio"]
    m = m + (knobs["noise"]["audio"] * noise_mult[3]) * rng.standard_normal(m.shape)
    tok = m.reshape(n_tok, MFCC_PER_TOKEN, N_MFCC).transpose(0, 2, 1).reshape(n_tok, N_MFCC * MFCC_PER_TOKEN)
    out["audio"] = (tok.astype(np.float16), np.ones(n_tok, bool), (np.arange(n_tok) * TOKEN_S).astype(np.float32))
    return out


# ------------------------------------------------------------------------------------------ generate
def _ceiling(plan: pd.DataFrame, split: str) -> float | None:
    p = plan[plan["split"] == split]
    if len(p) < 3:
        return None
    return round(mean_pearson(p[["y_" + e for e in EMOTIONS]].to_numpy(), p[["label_" + e for e in EMOTIONS]].to_numpy()), 4)


def generate(out: str | Path, preset: str = "tiny", seed: int = 0, progress: bool = True, **overrides) -> dict:
    """Write the synthetic dataset ``preset`` (with knob ``overrides``) under ``out``; return its summary.

    Resumable: videos whose four ``.npz`` files exist are skipped. Refuses (ValueError) to write into a
    store whose streams were generated with other knobs or another seed.
    """
    knobs = resolve_preset(preset, **overrides)
    seed = int(seed)
    out = Path(out)
    chash = config_hash(knobs, seed)
    store = FeatureStore(out)
    for s in ALL_STREAMS:
        p = store.dir / s / "meta.json"
        if p.exists():
            old = json.loads(p.read_text()).get("config_hash")
            if old != chash:
                raise ConfigError(
                    f"{out} already holds stream '{s}' generated with other knobs or seed (config_hash {old}, "
                    f"now {chash}); use another directory or delete {out}"
                )
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(knobs, seed)
    mix = _mixing(knobs, seed)
    split_name = plan["split"].map(SPLIT_NAMES)

    info = pd.DataFrame({"File_ID": "[" + plan["File_ID"] + "]", "Split": split_name})
    for e in EMOTIONS:
        info[e] = plan["label_" + e]
    info["Age"] = plan["Age"]
    info["Country"] = plan["Country"]
    atomic_write_text(out / "data_info.csv", info.to_csv(index=False))
    targets = pd.DataFrame({"File_ID": plan["File_ID"]})
    for e in EMOTIONS:
        targets[e] = plan["y_" + e]
    atomic_write_text(out / "targets.csv", targets.to_csv(index=False))
    videos = plan[["File_ID", "split", "subject", "duration", "fps", "n_frames", "low_valid"]]
    atomic_write_text(out / "videos.csv", videos.to_csv(index=False))

    for s in ALL_STREAMS:
        rate = STREAMS[s]["rate"]
        store.write_meta(s, {
            "stream": s, "dim": STREAMS[s]["dim"], "rate": rate, "dtype": "float16",
            "extractor": "synthetic", "config_hash": chash, "preset": preset, "seed": seed,
        })

    rows = {s: [] for s in ALL_STREAMS}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), desc=f"synthetic {preset}", unit="video")
    t0 = time.time()
    n_new = 0
    for row in plan.to_dict("records"):
        vid = row["File_ID"]
        paths = [store.dir / s / f"{vid}.npz" for s in ALL_STREAMS]
        if all(p.exists() for p in paths):
            for s, p in zip(ALL_STREAMS, paths):
                with np.load(p) as z:
                    v = z["valid"]
                rows[s].append({"File_ID": vid, "n_steps": int(len(v)), "n_valid": int(v.sum())})
        else:
            arrays = _video(row, knobs, mix, _subject(knobs, seed, int(row["subject"])), seed)
            for s in ALL_STREAMS:
                f, v, ts = arrays[s]
                store.write(s, vid, f, v, ts)
                rows[s].append({"File_ID": vid, "n_steps": int(len(v)), "n_valid": int(v.sum())})
            n_new += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    for s in ALL_STREAMS:
        store.write_index(s, rows[s])

    lab = plan[["label_" + e for e in EMOTIONS]].to_numpy()
    tr = (plan["split"] == "train").to_numpy()
    nvalid = pd.DataFrame(rows["holistic"])["n_valid"].to_numpy()
    low = plan["low_valid"].to_numpy()
    summary = {
        "generator": "eri.data.synthetic",
        "version": GENERATOR_VERSION,
        "preset": preset,
        "seed": seed,
        "config_hash": chash,
        "knobs": knobs,
        "counts": {
            s: {
                "videos": int((plan["split"] == s).sum()),
                "subjects": int(plan.loc[plan["split"] == s, "subject"].nunique()),
                "under_50_valid_frames": int((nvalid[(plan["split"] == s).to_numpy()] < 50).sum()),
            }
            for s in SPLIT_NAMES
        },
        "ceiling": {s: _ceiling(plan, s) for s in SPLIT_NAMES},
        "label_stats": {"train": label_stats(lab[tr]) if tr.sum() > 2 else None, "all": label_stats(lab)},
        "video_stats": {
            "mean_duration_s": round(float(plan["duration"].mean()), 3),
            "mean_frames": round(float(plan["n_frames"].mean()), 1),
            "noface_frame_fraction": round(float(1 - nvalid.sum() / plan["n_frames"].sum()), 4),
            "noface_frame_fraction_excl_low_valid": round(
                float(1 - nvalid[~low].sum() / plan["n_frames"].to_numpy()[~low].sum()), 4),
        },
    }
    atomic_write_text(out / "synthetic.json", json.dumps(summary, indent=2))
    summary["_generated_now"] = n_new  # not persisted (keeps synthetic.json reproducible)
    summary["_seconds"] = round(time.time() - t0, 2)
    return summary


def ensure_synthetic(root: str | Path, preset: str, seed: int = 0) -> Path:
    """Return ``root`` holding the complete synthetic dataset ``preset``/``seed``, generating it if needed.

    ValueError when ``root`` holds a complete synthetic dataset of another preset or seed (or of an older
    definition of the preset).
    """
    root = Path(root)
    path = root / "synthetic.json"
    if path.exists():
        have = json.loads(path.read_text())
        if have.get("preset") != preset or int(have.get("seed", -1)) != int(seed):
            raise ConfigError(
                f"{root} holds synthetic preset '{have.get('preset')}' seed {have.get('seed')}, not preset "
                f"'{preset}' seed {seed}; use another directory or delete {root}"
            )
        if have.get("config_hash") != config_hash(resolve_preset(preset), seed):
            raise ConfigError(
                f"{root} holds preset '{preset}' seed {seed} generated with other knobs (an older definition "
                f"or overrides); delete {root} to regenerate"
            )
        return root
    generate(root, preset=preset, seed=seed, progress=False)
    return root


# --------------------------------------------------------------------------------------- calibration
def pooled_features(root: str | Path, stream: str, ids) -> tuple[np.ndarray, np.ndarray]:
    """Masked mean (n, D) and peak (n, 2D) pooling over the valid steps of each video; peak pooling is the
    per-dimension max minus median, then median minus min (events may push a feature down)."""
    store = FeatureStore(root)
    d = store.meta(stream)["dim"]
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
