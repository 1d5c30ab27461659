"""Synthetic face videos with ERI labels: the feature generator's world, drawn as pixels (presets ``*-faces``).

Why: end-to-end training (paper 000) claims to beat a frozen MMA model because the pixels hold what
the MMA heads (valence/arousal, 7 expressions, 17 AUs) do not name. The feature presets cannot test
that claim; these videos can. Each video is a sequence of faces drawn by `drawing.render_face` (the
drawing the MMA CNN is trained on, `eri.mma.synthetic`) from the *same* plan and per-video event
timelines as the feature generator (`generator._plan`, `timeline.timeline`): the labels, splits,
subjects and the ceiling in ``synthetic.json`` come from the same machinery, computed the same way.

Per frame: emotion events (raised-cosine bumps, the intensity at the peak) -> expressions -> AUs and
valence/arousal, each emotion with its own ``face_visibility``; talking opens the mouth (AUs 25/26/10);
the plan's head-motion channels drift the pose (shift, roll, scale); lighting drifts slowly; pixel
noise; frames without a face (in bursts, and ~1% of videos with < 50 face frames) show background only.

The hidden cues: Empathic-Pain also shows as **tears** (light streaks from the lower lids down the
cheeks) and Adoration as **gaze aversion** (the pupils turned aside and down), with their own knob
``cue_visibility``. No MMA head names either, and both emotions show only weakly in expression/AU
space (Adoration's soft smile looks like a weak Amusement), so the 26 outputs of even a perfect frozen
MMA model lose what a pixel model can read. `frame_truth` gives per frame what a perfect MMA model
would output (``mma``, the mma stream's 26 columns) and the cues, for tests and analysis.

Layout written (the real one, so `tools/extract.py` runs on it unchanged): ``data_info.csv`` (ABAW5),
``videos/<File_ID>.mp4`` (H.264, no audio), ``targets.csv`` / ``videos.csv`` (the noiseless targets
and the plan, as the feature presets write them), ``synthetic.json`` last (the ceiling). Training
needs features: extract them first (or use the end-to-end config). Deterministic per (preset, seed,
knobs); resumable (videos already written are skipped); only a new or empty folder is written into.
"""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from eri.constants import AU_IDS, EMOTIONS, EXPRESSIONS
from eri.data.synthetic.claim import claim_folder, read_json
from eri.data.synthetic.drawing import render_face
from eri.data.synthetic.generator import ADVICE, _mixing, _plan, _subject, dataset_stats, write_tables
from eri.data.synthetic.knobs import (
    _TAG_FACE,
    _TAG_FACE_SUBJECT,
    FACE_KNOB_DOCS,
    FACE_KNOBS,
    GENERATOR_VERSION,
    KNOB_DOCS,
    knob_hash,
    resolve_preset,
)
from eri.data.synthetic.timeline import bumps, timeline
from eri.errors import ConfigError
from eri.io import atomic_write_bytes, atomic_write_text

GENERATOR = "eri.data.synthetic.faces"
HIDDEN_CUES = ("tears", "gaze")
VIDEO_DIR = "videos"


def resolve_face_preset(preset: str, **overrides) -> tuple[dict, dict]:
    """(plan knobs, face knobs) of a ``*-faces`` preset with ``overrides`` of either kind (ConfigError on
    unknown names)."""
    if preset not in FACE_KNOBS:
        raise ConfigError(f"'{preset}' is not a face-video preset; face presets: {', '.join(FACE_KNOBS)}")
    bad = sorted(set(overrides) - set(KNOB_DOCS) - set(FACE_KNOB_DOCS))
    if bad:
        raise ConfigError(f"unknown synthetic knob(s) {bad}; valid knobs: {', '.join([*KNOB_DOCS, *FACE_KNOB_DOCS])}")
    knobs = resolve_preset(preset, **{k: v for k, v in overrides.items() if k in KNOB_DOCS})
    face = {**json.loads(json.dumps(FACE_KNOBS[preset])), **{k: v for k, v in overrides.items() if k in FACE_KNOB_DOCS}}
    if int(face["canvas"]) <= 0 or int(face["canvas"]) % 128:
        raise ConfigError(f"face knob canvas={face['canvas']}: use a multiple of 128 (see FACE_KNOB_DOCS)")
    return knobs, face


def _hash(knobs: dict, face: dict, seed: int) -> str:
    return knob_hash({**knobs, "faces": face}, seed)


# ------------------------------------------------------------------------------------------ per frame
def frame_truth(row, knobs: dict, face: dict, mix: dict, seed: int) -> SimpleNamespace:
    """What one video shows per frame (no pixels): ``au`` (T, 17) intensities in [0, 1] and ``va`` (T, 2) as
    drawn, ``mma`` (T, 26) what a perfect MMA model outputs (valence, arousal, 7 expression probabilities,
    17 AU intensities; the mma stream's columns), ``cues`` (T, 2) tears and gaze, ``talk`` (T,), ``head``
    (T, 3), ``valid`` (T,) and ``t`` (T,) seconds. Same events as the video's feature streams."""
    tl = timeline(row, knobs, seed)
    events = bumps(tl.t_fr, tl.centre, tl.width)
    act = tl.activation(face["face_visibility"], events, face["face_jitter"])
    cues = np.stack([tl.activation(face["cue_visibility"][c], events, face["face_jitter"]).sum(axis=1)
                     for c in HIDDEN_CUES], axis=1)
    talk, _ = tl.talking(tl.t_fr)
    base = _subject(knobs, seed, int(row["subject"]))["au"] / 5.0  # identity: the au stream's resting AUs
    au = np.clip(base + act @ mix["emo_au"] + face["talk_gain"] * talk[:, None] * mix["mouth"][None, :], 0, 1)
    va = np.tanh(knobs["mma_va_gain"] * (act @ mix["va"]))
    logits = knobs["mma_expr_gain"] * (act @ mix["emo_expr"])
    logits[:, 0] += knobs["mma_neutral_logit"]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    mma = np.concatenate([va, probs, au], axis=1)
    mma[~tl.valid] = np.r_[[0.0, 0.0], np.full(len(EXPRESSIONS), 1 / len(EXPRESSIONS)), np.full(len(AU_IDS), 0.5)]
    return SimpleNamespace(au=au, va=va, mma=mma, cues=np.clip(cues, 0, 1), talk=talk, head=tl.head,
                           valid=tl.valid, t=tl.t_fr)


def render_video(row, truth: SimpleNamespace, face: dict, seed: int) -> np.ndarray:
    """(T, canvas, canvas, 3) uint8 frames of one video: the per-frame truth drawn with a per-subject skin,
    a per-video background, pose and lighting that drift, and pixel noise."""
    canvas, n = int(face["canvas"]), len(truth.t)
    skin_rng = np.random.default_rng([seed, _TAG_FACE_SUBJECT, int(row["subject"])])
    skin = np.array([skin_rng.uniform(150, 235), skin_rng.uniform(110, 180), skin_rng.uniform(80, 150)])
    rng = np.random.default_rng([seed, _TAG_FACE, int(row["index"])])
    background = rng.uniform((20, 30, 50), (90, 110, 160))  # darker than any skin: MTCNN finds the face
    scale0, angle0 = canvas * rng.uniform(*face["face_scale"]), rng.uniform(-0.1, 0.1)
    centre0 = canvas / 2 + rng.uniform(-0.05, 0.05, 2) * canvas
    shift, roll, zoom = face["pose_drift"]
    centre = centre0 + shift * canvas * truth.head[:, :2]
    angle = angle0 + roll * truth.head[:, 2]
    scale = scale0 * (1 + zoom * truth.head[:, 0])
    f, ph = rng.uniform(0.03, 0.2, 2), rng.uniform(0, 2 * np.pi, 2)
    drift = np.sin(2 * np.pi * f[None] * truth.t[:, None] + ph[None])  # (T, 2) slow lighting drift
    bright = face["lighting_drift"][0] * drift[:, 0]
    contrast = 1 + face["lighting_drift"][1] * drift[:, 1]
    side = rng.choice([-1.0, 1.0])  # which way this person looks away
    frames = np.empty((n, canvas, canvas, 3), np.uint8)
    for i in range(n):  # one image per frame: render_face draws one face
        look = {"scale": scale[i], "angle": angle[i], "centre": centre[i], "background": background, "skin": skin}
        tears, gaze = truth.cues[i]
        img, _ = render_face(rng, truth.au[i], truth.va[i], canvas, face=bool(truth.valid[i]), look=look,
                             cues={"tears": tears, "gaze": (side * 0.9 * gaze, 0.5 * gaze)},
                             noise=face["pixel_noise"])
        lit = (img.astype(np.float32) - 128) * contrast[i] + 128 + bright[i]
        frames[i] = np.clip(lit, 0, 255).round().astype(np.uint8)
    return frames


def write_video_file(path: Path, frames: np.ndarray, fps: float, crf: int) -> None:
    """H.264 (libx264, yuv420p) in mp4, as `eri.features.video.write_video` writes it (not imported: the
    features package builds on this one), written to a temporary name, then renamed."""
    import av

    def write(f):
        with av.open(f, "w", format="mp4") as c:
            vs = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            vs.options = {"crf": str(int(crf)), "preset": "medium"}
            for img in frames:
                for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    c.mux(packet)
            for packet in vs.encode():
                c.mux(packet)

    atomic_write_bytes(path, write)


# ------------------------------------------------------------------------------------------- generate
def _write_one(row: dict, knobs: dict, face: dict, mix: dict, seed: int, out: Path) -> tuple[int, bool]:
    """Render and write one video unless it exists (written atomically: an existing file is complete) ->
    (its valid frames, whether it was written now). A function of (row, knobs, seed) alone, so the videos
    are the same bytes whichever process renders them."""
    truth = frame_truth(row, knobs, face, mix, seed)
    path = out / VIDEO_DIR / f"{row['File_ID']}.mp4"
    if path.exists():
        return int(truth.valid.sum()), False
    write_video_file(path, render_video(row, truth, face, seed), float(row["fps"]), face["crf"])
    return int(truth.valid.sum()), True


def generate_faces(out: str | Path, preset: str = "tiny-faces", seed: int = 0, progress: bool = True,
                   workers: int = 0, **overrides) -> dict:
    """Write the face-video dataset ``preset`` under ``out`` (see the module docstring); return its summary.
    The folder rules and resuming are the feature generator's (`generate`). ``workers`` > 1 renders videos
    in that many processes (rendering is ~2 s per video on one core, the whole cost): same files."""
    knobs, face = resolve_face_preset(preset, **overrides)
    seed, out = int(seed), Path(out)
    chash = _hash(knobs, face, seed)
    claim_folder(out, {"generator": GENERATOR, "preset": preset, "seed": seed, "config_hash": chash}, ADVICE)
    plan = _plan(knobs, seed)
    mix = _mixing(knobs, seed)
    write_tables(out, plan)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), desc=f"synthetic {preset}", unit="video")
    t0, done = time.time(), []
    write = partial(_write_one, knobs=knobs, face=face, mix=mix, seed=seed, out=out)
    parallel = int(workers) > 1
    with ProcessPoolExecutor(int(workers)) if parallel else contextlib.nullcontext() as pool:
        for res in (pool.map if parallel else map)(write, plan.to_dict("records")):  # both keep the plan's order
            done.append(res)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    n_valid, n_new = [v for v, _ in done], sum(new for _, new in done)

    summary = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "preset": preset,
        "seed": seed,
        "config_hash": chash,
        "knobs": knobs,
        "face_knobs": face,
        "layout": f"{VIDEO_DIR}/<File_ID>.mp4: face videos, no features (extract them first)",
        "hidden_cues": {c: [e for e, g in zip(EMOTIONS, face["cue_visibility"][c]) if g > 0] for c in HIDDEN_CUES},
        **dataset_stats(plan, np.asarray(n_valid)),
    }
    atomic_write_text(out / "synthetic.json", json.dumps(summary, indent=2))
    summary["_generated_now"] = n_new  # not persisted (keeps synthetic.json reproducible)
    summary["_seconds"] = round(time.time() - t0, 2)
    return summary


def ensure_faces(root: str | Path, preset: str, seed: int = 0, features: bool = True) -> Path:
    """``root`` holding the complete face-video preset (generated if needed). With ``features`` (what
    training asks for), a ConfigError after generating when ``root/features`` does not exist yet: the
    videos must be extracted first (or trained on end to end)."""
    root = Path(root)
    have = read_json(root / "synthetic.json")
    knobs, face = resolve_face_preset(preset)
    if not (have and have.get("generator") == GENERATOR and have.get("preset") == preset
            and int(have.get("seed", -1)) == int(seed) and have.get("config_hash") == _hash(knobs, face, seed)):
        generate_faces(root, preset, seed, progress=False)  # refuses other data in root (claim_folder)
    if features and not (root / "features").is_dir():
        raise ConfigError(f"data.synthetic={preset} writes face videos, not features: extract them first "
                          f"(tools/extract.py --config configs/extract/<config>.yaml --data-root {root}) or "
                          f"train end to end on the videos")
    return root
