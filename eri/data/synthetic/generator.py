"""The plan (splits, subjects, labels, durations), one video's arrays per stream, and the resumable writer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from eri.constants import AU_IDS, EMOTIONS, EXPRESSION_AUS, EXPRESSIONS
from eri.data.store import FeatureStore
from eri.data.synthetic.claim import claim_folder, read_json
from eri.data.synthetic.knobs import (
    _TAG_MIX,
    _TAG_PLAN,
    _TAG_SUBJECT,
    ALL_STREAMS,
    AROUSAL,
    EMOTION_EXPRESSIONS,
    EMOTION_EXTRA_AUS,
    FACE_KNOBS,
    GENERATOR_VERSION,
    MFCC_HOP_S,
    MFCC_PER_TOKEN,
    MOUTH_TALK_AUS,
    N_MFCC,
    SPLIT_NAMES,
    SYNTHETIC,
    TOKEN_S,
    VALENCE,
    knob_hash,
    resolve_preset,
)
from eri.data.synthetic.labels import label_stats, mean_pearson, sample_labels
from eri.data.synthetic.timeline import bumps, timeline
from eri.errors import ConfigError
from eri.io import atomic_write_text
from eri.streams import read_stream_meta


# what a user whose folder was refused can do instead (eri.data.synthetic.claim)
ADVICE = ("to train on your own data there set data.synthetic=null; for synthetic data give data.root "
          "(tools/make_synthetic.py: --out) a new or empty folder")


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

    d_h = SYNTHETIC["holistic"].dim
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
        "holistic": ids["holistic"] * rng.standard_normal(SYNTHETIC["holistic"].dim),
        "audio": ids["audio"] * rng.standard_normal(N_MFCC),
        "au": ids["au"] * rng.random(len(AU_IDS)),
    }


# -------------------------------------------------------------------------------------------- a video
def _video(row, knobs: dict, mix: dict, subj: dict, seed: int) -> dict[str, tuple]:
    """All four streams of one video: {stream: (features float16 (T, D), valid (T,), timestamps (T,))}."""
    tl = timeline(row, knobs, seed)
    rng, dur, n_fr, t_fr, head, valid = tl.rng, tl.dur, tl.n_frames, tl.t_fr, tl.head, tl.valid
    noise_mult = tl.noise_mult
    n_mfcc = 1 + int(round(dur * 16000)) // 256
    n_tok = n_mfcc // MFCC_PER_TOKEN
    t_mf = np.arange(n_tok * MFCC_PER_TOKEN) * MFCC_HOP_S
    b_fr = bumps(t_fr, tl.centre, tl.width)  # (n_ev, T)
    b_mf = bumps(t_mf, tl.centre, tl.width)  # (n_ev, M)

    def activation(stream, bumps):
        return tl.activation(knobs["visibility"][stream], bumps, knobs["amp_jitter"][stream])

    mouth_fr, _ = tl.talking(t_fr)
    out = {}
    ts_fr = t_fr.astype(np.float32)

    # holistic (ResNet-like embedding): emotion directions + talk + head motion + identity + noise
    ta = knobs["talk_amp"]
    act = activation("holistic", b_fr)
    nuis = np.concatenate([ta["holistic"] * mouth_fr[:, None], head], axis=1)
    d_h = SYNTHETIC["holistic"].dim
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
    mouth_mf, phon = tl.talking(t_mf)
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


def generate(out: str | Path, preset: str = "tiny", seed: int = 0, progress: bool = True, workers: int = 0,
             **overrides) -> dict:
    """Write the synthetic dataset ``preset`` (with knob ``overrides``) under ``out``; return its summary.

    Writes only into a new or empty folder, or one this generator started for the same preset, seed
    and knobs (`eri.data.synthetic.claim`): a user's own data is never overwritten. Resumable: videos
    whose four ``.npz`` files exist are skipped. Anything else is refused (`ConfigError`).
    A ``*-faces`` preset writes face videos instead (`eri.data.synthetic.faces`), rendered in ``workers``
    processes when > 1 (feature presets are written in one: their cost is small).
    """
    if preset in FACE_KNOBS:
        from eri.data.synthetic.faces import generate_faces

        return generate_faces(out, preset, seed, progress, workers, **overrides)
    knobs = resolve_preset(preset, **overrides)
    seed = int(seed)
    out = Path(out)
    chash = knob_hash(knobs, seed)
    claim_folder(out, {"generator": "eri.data.synthetic", "preset": preset, "seed": seed, "config_hash": chash}, ADVICE)
    store = FeatureStore(out)
    for s in ALL_STREAMS:
        p = store.dir / s / "meta.json"
        if p.exists():
            old = read_stream_meta(p).config_hash
            if old != chash:
                raise ConfigError(
                    f"{out} already holds stream '{s}' generated with other knobs or seed (config_hash {old}, "
                    f"now {chash}); use another (new or empty) folder"
                )
    plan = _plan(knobs, seed)
    mix = _mixing(knobs, seed)
    write_tables(out, plan)

    for s in ALL_STREAMS:
        store.write_meta(s, SYNTHETIC[s].replace(config_hash=chash, extra={"preset": preset, "seed": seed}))

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
            if set(arrays) != set(ALL_STREAMS):
                raise ConfigError(f"the generator has recipes for {sorted(arrays)}, the catalogue names "
                                  f"{list(ALL_STREAMS)}")
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

    summary = {
        "generator": "eri.data.synthetic",
        "version": GENERATOR_VERSION,
        "preset": preset,
        "seed": seed,
        "config_hash": chash,
        "knobs": knobs,
        **dataset_stats(plan, pd.DataFrame(rows["holistic"])["n_valid"].to_numpy()),
    }
    atomic_write_text(out / "synthetic.json", json.dumps(summary, indent=2))
    summary["_generated_now"] = n_new  # not persisted (keeps synthetic.json reproducible)
    summary["_seconds"] = round(time.time() - t0, 2)
    return summary


def write_tables(out: Path, plan: pd.DataFrame) -> None:
    """``data_info.csv`` (the labels, ABAW5 layout), ``targets.csv`` (the noiseless targets), ``videos.csv``."""
    info = pd.DataFrame({"File_ID": "[" + plan["File_ID"] + "]", "Split": plan["split"].map(SPLIT_NAMES)})
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


def dataset_stats(plan: pd.DataFrame, nvalid: np.ndarray) -> dict:
    """The counts, ceiling, label and video statistics of ``synthetic.json`` (``nvalid``: face frames per video)."""
    lab = plan[["label_" + e for e in EMOTIONS]].to_numpy()
    tr = (plan["split"] == "train").to_numpy()
    low = plan["low_valid"].to_numpy()
    return {
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


def ensure_synthetic(root: str | Path, preset: str, seed: int = 0, features: bool = True) -> Path:
    """Return ``root`` holding the complete synthetic dataset ``preset``/``seed``, generating it if needed.

    `ConfigError` when ``root`` holds a complete synthetic dataset of another preset or seed (or of an
    older definition of the preset), or files the generator did not write (`generate`). A ``*-faces``
    preset holds videos: with ``features`` (training's call) a ConfigError says to extract them first.
    """
    if preset in FACE_KNOBS:
        from eri.data.synthetic.faces import ensure_faces

        return ensure_faces(root, preset, seed, features)
    root = Path(root)
    have = read_json(root / "synthetic.json")  # None when missing or not JSON: generate() decides
    if have is not None and have.get("generator") == "eri.data.synthetic":
        if have.get("preset") != preset or int(have.get("seed", -1)) != int(seed):
            raise ConfigError(
                f"{root} holds synthetic preset '{have.get('preset')}' seed {have.get('seed')}, not preset "
                f"'{preset}' seed {seed}; use another (new or empty) folder for it"
            )
        if have.get("config_hash") != knob_hash(resolve_preset(preset), seed):
            raise ConfigError(
                f"{root} holds preset '{preset}' seed {seed} generated with other knobs (an older definition "
                f"or overrides); use another (new or empty) folder to generate the current one"
            )
        return root
    generate(root, preset=preset, seed=seed, progress=False)
    return root
