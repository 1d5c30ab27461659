"""Generated face-like images with learnable affect labels, written in the real datasets' layouts.

The real MMA training sets (AffectNet, Aff-Wild2, EmotioNet) are licensed; tests and the CPU demo
use this generator instead, and because it writes *their* files (AffectNet's CSV with boxes and 68
landmarks beside raw images, Aff-Wild2's per-video annotation files beside cropped-aligned frames,
EmotioNet's AU table with 999 markers) the readers in `eri.mma.data` run on it unchanged.

A face is drawn (`eri.data.synthetic.drawing`, shared with the synthetic ERI face videos) in the
coordinates of the aligned crop (the ArcFace 5-point template that
`eri.features.faces.align_face` maps onto), then placed in a larger canvas with a random
similarity transform (scale, rotation, shift). Labels drive the drawing:

- expression (7, uniform) -> which AUs fire (expression-AU table of DESIGN.md, 85% per table AU,
  7% per other AU; active intensity U(0.5, 1), inactive U(0, 0.15)) and a valence-arousal centre;
- AUs -> brows (1 inner raise, 2 outer raise, 4 lowering + frown), eyes (5 wide, 7 squint),
  cheeks (6), nose wrinkle (9), teeth (10), nasolabial lines (11), mouth corners (12 up, 15 down),
  chin bump (17), mouth width (20 wider, 23 narrower), lip darkness (24), mouth opening (25, 26);
- valence bends the mouth, arousal opens the eyes and raises the brows.
Skin tone, background, pose and pixel noise are nuisances. Everything is seeded and deterministic.
Two optional cues that no MMA head names (tears, gaze aversion) are drawn only when asked for: the
synthetic ERI face videos use them to carry information a frozen MMA model cannot pass on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eri.data.synthetic.claim import claim_folder, read_json
from eri.data.synthetic.drawing import TEMPLATE, random_look, render_face  # noqa: F401  (re-exported)
from eri.errors import ConfigError
from eri.io import atomic_write_bytes, atomic_write_text
from eri.models.mma import AU_IDS, EXPRESSIONS, expression_au_table

VA_CENTRES = {
    "Neutral": (0.0, 0.0),
    "Anger": (-0.6, 0.6),
    "Disgust": (-0.6, 0.2),
    "Fear": (-0.5, 0.7),
    "Happiness": (0.7, 0.4),
    "Sadness": (-0.6, -0.4),
    "Surprise": (0.2, 0.8),
}
# what a user whose folder was refused can do instead (eri.data.synthetic.claim)
ADVICE = ("to train on your own face data set data.synthetic=null and point data.datasets at it; for "
          "synthetic data give data.synthetic_root a new or empty folder")
AFFECTNET_CODES = ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger")  # codes 0-6
AFFWILD2_AUS = (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)
EMOTIONET_AUS = (1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26)


def sample_labels(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Expression index (our order), VA in [-1, 1], AU intensities in [0, 1] and AU occurrence (0/1)."""
    table = expression_au_table().numpy()
    expr = rng.integers(0, len(EXPRESSIONS), n)
    p = np.where(table[expr] > 0, 0.85, 0.07)
    active = rng.random((n, len(AU_IDS))) < p
    intensity = np.where(active, rng.uniform(0.5, 1.0, active.shape), rng.uniform(0.0, 0.15, active.shape))
    centres = np.array([VA_CENTRES[e] for e in EXPRESSIONS])
    va = np.clip(centres[expr] + rng.normal(0, 0.2, (n, 2)), -1, 1)
    return {"expr": expr, "va": va, "au": active.astype(np.float32), "au_intensity": intensity}


def landmarks68(lm5: np.ndarray) -> np.ndarray:
    """A plausible 68-point (iBUG order) layout consistent with the 5 points: what AffectNet's CSV holds.

    The readers only use points 36-47 (eyes), 30 (nose tip), 48 and 54 (mouth corners); the rest
    are placed on the face outline so the column looks like the real one."""
    le, re, nose, lm, rm = lm5
    ex, ey = (re - le), None
    ey = np.array([-ex[1], ex[0]])  # down, for a face in the image plane
    pts = np.zeros((68, 2))
    centre = (le + re) / 2
    for i in range(17):  # jaw
        ang = np.pi * i / 16
        pts[i] = centre - ex * 1.1 * np.cos(ang) + ey * (0.2 + 1.3 * np.sin(ang))
    for i in range(5):  # brows
        pts[17 + i] = le + ex * (-0.35 + 0.15 * i) - ey * 0.35
        pts[22 + i] = re + ex * (-0.25 + 0.15 * i) - ey * 0.35
    for i in range(4):  # nose bridge, 27-30 ending at the tip
        pts[27 + i] = centre + (nose - centre) * (i + 1) / 4
    for i in range(5):  # nostrils
        pts[31 + i] = nose + ex * (-0.2 + 0.1 * i) + ey * 0.1
    for base, c in ((36, le), (42, re)):
        for i in range(6):
            ang = 2 * np.pi * i / 6
            pts[base + i] = c + ex * 0.18 * np.cos(ang + np.pi) + ey * 0.06 * np.sin(ang)
    mc = (lm + rm) / 2
    for i in range(12):  # outer lip 48-59, 48 and 54 the corners
        ang = 2 * np.pi * i / 12
        pts[48 + i] = mc + (lm - mc) * np.cos(ang) + ey * 0.15 * np.sin(ang)
    for i in range(8):  # inner lip
        ang = 2 * np.pi * i / 8
        pts[60 + i] = mc + (lm - mc) * 0.8 * np.cos(ang) + ey * 0.07 * np.sin(ang)
    return pts


def _write_jpeg(path: Path, img: np.ndarray) -> None:
    import torch
    from torchvision.io import encode_jpeg

    data = bytes(encode_jpeg(torch.from_numpy(img).permute(2, 0, 1).contiguous(), quality=95).numpy())
    atomic_write_bytes(path, lambda f: f.write(data))


def write_affectnet(root, n=(400, 100), seed=0, canvas=96, extras: bool = True) -> Path:
    """AffectNet layout: ``Manually_Annotated_Images/<dir>/<file>.jpg``, ``training.csv``, ``validation.csv``.

    With ``extras`` a few rows carry the real markers: 7 (contempt, VA kept), 8 (none, VA kept),
    10 (no face, VA -2, a background-only image)."""
    import pandas as pd

    root = Path(root)
    rng = np.random.default_rng([seed, 1])
    for split, count in zip(("training", "validation"), n):
        lab = sample_labels(rng, count)
        rows = []
        for i in range(count):
            code = AFFECTNET_CODES.index(EXPRESSIONS[lab["expr"][i]])
            va = lab["va"][i]
            face = True
            if extras and i % 25 == 7:
                code = int(rng.choice([7, 8, 10]))
                face = code != 10
                if code == 10:
                    va = np.array([-2.0, -2.0])
            img, lm5 = render_face(rng, lab["au_intensity"][i], lab["va"][i], canvas, face=face)
            rel = f"{i % 7 + 1}/{split[:3]}_{i:05d}.jpg"
            _write_jpeg(root / "Manually_Annotated_Images" / rel, img)
            lm68 = landmarks68(lm5)
            box = np.r_[lm68.min(0), lm68.max(0) - lm68.min(0)].round().astype(int)
            rows.append(
                {
                    "subDirectory_filePath": rel,
                    "face_x": box[0],
                    "face_y": box[1],
                    "face_width": box[2],
                    "face_height": box[3],
                    "facial_landmarks": ";".join(f"{x:.2f}" for x in lm68.reshape(-1)),
                    "expression": code,
                    "valence": round(float(va[0]), 6),
                    "arousal": round(float(va[1]), 6),
                }
            )
        atomic_write_text(root / f"{split}.csv", pd.DataFrame(rows).to_csv(index=False))
    return root


def write_affwild2(root, videos=(("train", 6, 40), ("val", 2, 40)), seed=0, canvas=96, crop=112) -> Path:
    """Aff-Wild2 (ABAW) layout: ``cropped_aligned/<video>/<00001>.jpg`` (aligned with eri's align_face) and
    ``Third_ABAW_Annotations/<Task>_Challenge/<Train|Validation>_Set/<video>.txt``.

    Markers: VA -5 and expression -1 / AU -1 lines (no label), expression 7 (Other), a frame with
    no image (no face detected), and not every video annotated for every task."""
    from eri.align import align_face

    root = Path(root)
    rng = np.random.default_rng([seed, 2])
    ann = root / "Third_ABAW_Annotations"
    folders = {"train": "Train_Set", "val": "Validation_Set"}
    for split, n_videos, n_frames in videos:
        for k in range(n_videos):
            vid = f"{split}_{k:03d}" + ("_left" if k == 1 else "")
            lab = sample_labels(rng, n_frames)
            for i in range(n_frames):
                if i == 3:  # no face in this frame: no image file, its annotation lines still exist
                    continue
                img, lm5 = render_face(rng, lab["au_intensity"][i], lab["va"][i], canvas)
                _write_jpeg(root / "cropped_aligned" / vid / f"{i + 1:05d}.jpg", align_face(img, lm5, crop))
            va = lab["va"].copy()
            va[5] = -5
            expr = lab["expr"].copy()
            expr[6], expr[7] = -1, 7
            au = lab["au"][:, [AU_IDS.index(x) for x in AFFWILD2_AUS]].astype(int)
            au[8] = -1
            folder = folders[split]
            if k % 3 != 2:
                atomic_write_text(
                    ann / "VA_Estimation_Challenge" / folder / f"{vid}.txt",
                    "valence,arousal\n" + "".join(f"{a:.3f},{b:.3f}\n" for a, b in va),
                )
            if k % 3 != 1:
                atomic_write_text(
                    ann / "EXPR_Classification_Challenge" / folder / f"{vid}.txt",
                    "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n" + "".join(f"{e}\n" for e in expr),
                )
            if k % 3 != 0 or n_videos == 1:
                atomic_write_text(
                    ann / "AU_Detection_Challenge" / folder / f"{vid}.txt",
                    ",".join(f"AU{x}" for x in AFFWILD2_AUS) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in au),
                )
    return root


def write_emotionet(root, n=(200, 60), seed=0, canvas=96, crop=112) -> Path:
    """EmotioNet layout as eri reads it: ``images/<name>.jpg`` + ``train.csv`` / ``val.csv`` with an
    image column then one ``AU <k>`` column per labelled AU (1 present, 0 absent, 999 unknown).
    EmotioNet ships images without landmarks; the generated ones are aligned crops (see the reader)."""
    import pandas as pd

    from eri.align import align_face

    root = Path(root)
    rng = np.random.default_rng([seed, 3])
    for split, count in zip(("train", "val"), n):
        lab = sample_labels(rng, count)
        rows = []
        for i in range(count):
            img, lm5 = render_face(rng, lab["au_intensity"][i], lab["va"][i], canvas)
            name = f"images/{split}_{i:05d}.jpg"
            _write_jpeg(root / name, align_face(img, lm5, crop))
            row = {"image": name}
            for x in EMOTIONET_AUS:
                row[f"AU {x}"] = 999 if (i % 10 == 3 and x in (2, 9)) else int(lab["au"][i, AU_IDS.index(x)])
            rows.append(row)
        atomic_write_text(root / f"{split}.csv", pd.DataFrame(rows).to_csv(index=False))
    return root


PRESETS = {  # sizes of the three sets, canvas (raw image) and aligned-crop sizes
    "tiny": {
        "affectnet": (60, 30),
        "affwild2": (("train", 3, 12), ("val", 2, 10)),
        "emotionet": (30, 15),
        "canvas": 64,
        "crop": 64,
    },
    "small": {
        "affectnet": (2000, 400),
        "affwild2": (("train", 20, 60), ("val", 6, 50)),
        "emotionet": (800, 200),
        "canvas": 96,
        "crop": 112,
    },
}


def ensure_mma_synthetic(root, preset: str = "small", seed: int = 0) -> Path:
    """``root/{affectnet,affwild2,emotionet}`` for a preset; generated once (``synthetic.json`` last).

    Writes only into a new or empty folder, or one it started for the same preset and seed (an
    interrupted run is redone there; `eri.data.synthetic.claim`): a user's own data is never touched."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown MMA synthetic preset '{preset}'; valid: {sorted(PRESETS)}")
    root = Path(root)
    stamp = root / "synthetic.json"
    want = {"preset": preset, "seed": seed, "version": 1}
    claim_folder(root, {"generator": "eri.mma.synthetic", **want}, ADVICE, complete_keys=tuple(want))
    if read_json(stamp) == want:
        return root
    p = PRESETS[preset]
    write_affectnet(root / "affectnet", p["affectnet"], seed, p["canvas"])
    write_affwild2(root / "affwild2", p["affwild2"], seed, p["canvas"], p["crop"])
    write_emotionet(root / "emotionet", p["emotionet"], seed, p["canvas"], p["crop"])
    atomic_write_text(stamp, json.dumps(want))
    return root
