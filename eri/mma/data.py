"""Readers for the public affect datasets, one sample format, a mixing sampler, the data module.

Every reader returns a `Records` table (image paths, optional 5-point landmarks, labels and
per-task masks); `FaceDataset` turns a row into the sample every dataset shares:

    {"image": uint8 (3, S, S), "va": (2,), "va_mask": bool, "expr": int64 (-1: none),
     "au": (17,), "au_mask": (17,) bool, "valid": bool}

in our label spaces (`eri.models.mma.EXPRESSIONS`, `AU_IDS`). Faces with landmarks are aligned by
`eri.features.faces.align_face`, the code extraction uses, at ``align_size`` (extraction's crop
size) and then resized to the model's crop size exactly as `MMANet.preprocess` resizes.

On-disk formats (the real distributions):

- **AffectNet**: ``<root>/training.csv`` / ``validation.csv`` with ``subDirectory_filePath, face_x,
  face_y, face_width, face_height, facial_landmarks (68 x;y pairs, ';'-separated), expression,
  valence, arousal``; images under ``<root>/Manually_Annotated_Images/``. Expression codes 0-6
  (Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger) map by name to our order; 7 (contempt),
  8 (none) and 9 (uncertain) keep their valence-arousal but carry no expression label (contempt
  is not one of the 7 classes); 10 (no face) rows are skipped; valence/arousal -2 means none.
  Landmarks -> 5 points: mean of 36-41 and 42-47 (eyes), 30 (nose tip), 48 and 54 (mouth corners).
- **Aff-Wild2** (ABAW): ``<root>/cropped_aligned/<video>/<frame:05d>.jpg`` and
  ``<root>/<annotations>/{VA_Estimation,EXPR_Classification,AU_Detection}_Challenge/{Train,Validation}_Set/<video>.txt``,
  a header then one line per frame (line i = frame i). VA -5, expression -1 and AU -1 mean no
  label; expression 7 (Other) is no label for our 7 classes. The 12 Aff-Wild2 AUs fill their slots
  of the 17; the others are masked. Frames without an image (no face) are skipped.
- **EmotioNet**: ``<root>/<split>.csv`` (``train.csv`` / ``val.csv`` unless configured): the first
  column the image path (relative to the root), then AU columns named ``AU 1`` / ``AU1`` ...
  (1 present, 0 absent, 999 unknown). EmotioNet has no landmarks: give face crops aligned like
  extraction's, or add ten columns ``lm_x0, lm_y0, ... lm_x4, lm_y4`` (5 points) and they are aligned.

A row whose file is missing is skipped when the table is read, and reported (count and the first
few); an image that fails to decode during training is reported and becomes an all-masked sample,
so one bad file never stops an epoch.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from eri.data.labels import LabelError, read_table
from eri.models.mma import AU_IDS, EXPRESSIONS, resize_uint8
from eri.registry import Registry

N_AU = len(AU_IDS)
AFFECTNET_NAMES = ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger")  # codes 0-6
AFFWILD2_EXPR = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")  # codes 0-6, 7 Other
AFFWILD2_TASKS = {
    "va": "VA_Estimation_Challenge",
    "expr": "EXPR_Classification_Challenge",
    "au": "AU_Detection_Challenge",
}


class DataFormatError(LabelError):
    """A label table of an MMA dataset that is malformed (the message names the file)."""


@dataclass
class Records:
    """One dataset split as arrays; ``landmarks`` rows are NaN for already-aligned images."""

    name: str
    paths: list
    landmarks: np.ndarray  # (N, 5, 2) float, NaN: image is an aligned crop
    va: np.ndarray  # (N, 2) float32
    va_mask: np.ndarray  # (N,) bool
    expr: np.ndarray  # (N,) int64, -1 = no label
    au: np.ndarray  # (N, 17) float32
    au_mask: np.ndarray  # (N, 17) bool

    def __len__(self) -> int:
        return len(self.paths)

    def tasks(self) -> set[str]:
        return {t for t, m in (("va", self.va_mask), ("expr", self.expr >= 0), ("au", self.au_mask)) if m.any()}


def _empty(name: str, n: int) -> Records:
    return Records(
        name,
        [None] * n,
        np.full((n, 5, 2), np.nan),
        np.zeros((n, 2), np.float32),
        np.zeros(n, bool),
        np.full(n, -1, np.int64),
        np.zeros((n, N_AU), np.float32),
        np.zeros((n, N_AU), bool),
    )


def _keep(rec: Records, keep: np.ndarray, what: str) -> Records:
    """Drop rows (missing files, no-face rows) and say so: count and the first few."""
    dropped = [p for p, k in zip(rec.paths, keep) if not k]
    if dropped:
        warnings.warn(
            f"{rec.name}: skipped {len(dropped)} row(s) ({what}), e.g. {[str(p) for p in dropped[:3]]}", stacklevel=3
        )
    return Records(
        rec.name,
        [p for p, k in zip(rec.paths, keep) if k],
        rec.landmarks[keep],
        rec.va[keep],
        rec.va_mask[keep],
        rec.expr[keep],
        rec.au[keep],
        rec.au_mask[keep],
    )


def _present(rec: Records, root: Path, what: str) -> Records:
    """Rows whose image lies inside ``root`` (a table from elsewhere cannot point the reader at other
    files) and exists; the others are skipped and counted."""
    base = os.path.abspath(root)
    inside = np.array([os.path.commonpath([base, os.path.abspath(p)]) == base for p in rec.paths], bool)
    rec = _keep(rec, inside, f"image path outside {root}: refused")
    return _keep(rec, np.array([p.exists() for p in rec.paths], bool), what)


def _require(df: pd.DataFrame, cols, path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


# ------------------------------------------------------------------------------------------- AffectNet
def read_affectnet(
    root, split: str = "train", csv: str | None = None, images: str = "Manually_Annotated_Images"
) -> Records:
    root = Path(root)
    path = root / (csv or {"train": "training.csv", "val": "validation.csv"}.get(split, f"{split}.csv"))
    if not path.exists():
        raise DataFormatError(f"AffectNet table {path} not found (expected training.csv / validation.csv in {root})")
    df = read_table(path)
    _require(df, ["subDirectory_filePath", "facial_landmarks", "expression", "valence", "arousal"], path)
    n = len(df)
    rec = _empty(f"affectnet/{split}", n)
    rec.paths = [root / images / p for p in df["subDirectory_filePath"].astype(str)]
    code = pd.to_numeric(df["expression"], errors="coerce").to_numpy()
    bad = np.isnan(code) | (code < 0) | (code > 10)
    if bad.any():
        raise DataFormatError(
            f"{path}: expression codes must be 0-10, bad rows {np.flatnonzero(bad)[:5].tolist()} (0-based)"
        )
    code = code.astype(int)
    to_ours = np.array([EXPRESSIONS.index(n) for n in AFFECTNET_NAMES] + [-1, -1, -1, -1])  # 7-10: no class
    rec.expr = to_ours[code].astype(np.int64)
    va = df[["valence", "arousal"]].to_numpy(np.float64)
    rec.va_mask = ~np.isnan(va).any(1) & (va != -2).all(1)
    if (np.abs(va[rec.va_mask]) > 1).any():
        raise DataFormatError(f"{path}: valence/arousal must be in [-1, 1] (or -2 for none)")
    rec.va = np.where(rec.va_mask[:, None], va, 0).astype(np.float32)
    lm = np.full((n, 68, 2), np.nan)
    for i, s in enumerate(df["facial_landmarks"].astype(str)):
        vals = np.array([float(x) for x in s.split(";") if x.strip()]) if s != "nan" else np.zeros(0)
        if vals.size == 136:
            lm[i] = vals.reshape(68, 2)
    rec.landmarks = np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], 1)
    keep = code != 10
    rec = _keep(rec, keep, "expression 10: no face")
    has_lm = ~np.isnan(rec.landmarks).any((1, 2))
    rec = _keep(rec, has_lm, "landmarks missing or not 68 points")
    return _present(rec, root, "image file missing")


# -------------------------------------------------------------------------------------------- Aff-Wild2
def _read_lines(path: Path, width: int) -> np.ndarray:
    rows = [ln.strip() for ln in path.read_text().splitlines()[1:] if ln.strip()]
    try:
        arr = np.array([[float(x) for x in r.split(",")] for r in rows], dtype=np.float64).reshape(len(rows), -1)
    except ValueError as e:
        raise DataFormatError(f"{path}: not a comma-separated numeric annotation file ({e})") from None
    if len(rows) and arr.shape[1] != width:
        raise DataFormatError(f"{path}: expected {width} values per line, found {arr.shape[1]}")
    return arr


def read_affwild2(
    root, split: str = "train", annotations: str = "Third_ABAW_Annotations", frames: str = "cropped_aligned"
) -> Records:
    root = Path(root)
    folder = {"train": "Train_Set", "val": "Validation_Set"}.get(split, split)
    task_dirs = {t: root / annotations / d / folder for t, d in AFFWILD2_TASKS.items()}
    if not any(d.exists() for d in task_dirs.values()):
        raise DataFormatError(f"Aff-Wild2: none of {[str(d) for d in task_dirs.values()]} exists")
    videos = sorted({p.stem for d in task_dirs.values() if d.exists() for p in d.glob("*.txt")})
    parts = []
    for vid in videos:
        ann = {
            t: _read_lines(d / f"{vid}.txt", {"va": 2, "expr": 1, "au": None}[t] or _au_width(d / f"{vid}.txt"))
            for t, d in task_dirs.items()
            if (d / f"{vid}.txt").exists()
        }
        n = max(len(a) for a in ann.values())
        rec = _empty(f"affwild2/{split}", n)
        rec.paths = [root / frames / vid / f"{i + 1:05d}.jpg" for i in range(n)]
        if "va" in ann:
            va = ann["va"]
            m = np.zeros(n, bool)
            m[: len(va)] = (va > -5).all(1)
            rec.va[: len(va)] = np.where((va > -5).all(1)[:, None], va, 0)
            rec.va_mask = m
        if "expr" in ann:
            e = ann["expr"][:, 0].astype(int)
            to_ours = np.array([EXPRESSIONS.index(x) for x in AFFWILD2_EXPR] + [-1])  # 7 Other: no label
            rec.expr[: len(e)] = np.where((e >= 0) & (e <= 7), to_ours[np.clip(e, 0, 7)], -1)
        if "au" in ann:
            header = (task_dirs["au"] / f"{vid}.txt").read_text().splitlines()[0]
            cols = [int(c.strip().upper().replace("AU", "")) for c in header.split(",")]
            a = ann["au"]
            for j, au_id in enumerate(cols):
                if au_id in AU_IDS:
                    k = AU_IDS.index(au_id)
                    rec.au_mask[: len(a), k] = a[:, j] >= 0
                    rec.au[: len(a), k] = np.clip(a[:, j], 0, 1)
        parts.append(rec)
    rec = _concat(f"affwild2/{split}", parts)
    return _present(rec, root, "frame image missing: no face")


def _au_width(path: Path) -> int:
    return len(path.read_text().splitlines()[0].split(","))


def _concat(name: str, parts: list[Records]) -> Records:
    if not parts:
        return _empty(name, 0)
    return Records(
        name,
        [p for r in parts for p in r.paths],
        *(
            np.concatenate([getattr(r, f) for r in parts])
            for f in ("landmarks", "va", "va_mask", "expr", "au", "au_mask")
        ),
    )


# -------------------------------------------------------------------------------------------- EmotioNet
def read_emotionet(root, split: str = "train", csv: str | None = None) -> Records:
    root = Path(root)
    path = root / (csv or f"{split}.csv")
    if not path.exists():
        raise DataFormatError(f"EmotioNet table {path} not found")
    df = read_table(path)
    au_cols = {
        c: int(c.replace(" ", "").upper()[2:])
        for c in df.columns
        if c.replace(" ", "").upper().startswith("AU") and c.replace(" ", "").upper()[2:].isdigit()
    }
    if not au_cols:
        raise DataFormatError(f"{path}: no AU columns (named like 'AU 1' or 'AU1') in {list(df.columns)}")
    rec = _empty(f"emotionet/{split}", len(df))
    rec.paths = [root / p for p in df.iloc[:, 0].astype(str)]
    for c, au_id in au_cols.items():
        if au_id not in AU_IDS:
            continue
        v = pd.to_numeric(df[c], errors="coerce").to_numpy()
        ok = np.isin(v, (0, 1))
        if not (ok | (v == 999)).all():
            raise DataFormatError(f"{path}: column '{c}' must hold 0, 1 or 999 (unknown)")
        k = AU_IDS.index(au_id)
        rec.au_mask[:, k] = ok
        rec.au[:, k] = np.where(ok, v, 0)
    lm_cols = [f"lm_{a}{i}" for i in range(5) for a in "xy"]
    if all(c in df.columns for c in lm_cols):
        rec.landmarks = df[lm_cols].to_numpy(np.float64).reshape(-1, 5, 2)
    return _present(rec, root, "image file missing")


READERS = Registry("reader")  # config `data.datasets[i].reader`; (root, split, **options) -> Records
READERS.add("affectnet", read_affectnet, description="AffectNet: CSVs with 68 landmarks, expression, VA")
READERS.add("affwild2", read_affwild2, description="Aff-Wild2 (ABAW): cropped_aligned frames, VA / EXPR / AU files")
READERS.add("emotionet", read_emotionet, description="EmotioNet: a CSV of image paths and AU columns")


# ---------------------------------------------------------------------------------------------- samples
def build_augment(
    crop_size: int, flip: bool = True, scale_min: float = 0.85, rotation: float = 10.0, color_jitter: float = 0.2
):
    """torchvision v2 pipeline on uint8 (3, S, S); a horizontal flip keeps expression, VA and AU labels
    (the 17 AUs are bilateral)."""
    from torchvision.transforms import v2

    ops = []
    if rotation:
        ops.append(v2.RandomRotation(rotation))
    if scale_min < 1:
        ops.append(v2.RandomResizedCrop(crop_size, scale=(scale_min, 1.0), ratio=(0.9, 1.1), antialias=True))
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter:
        ops.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(ops) if ops else None


class FaceDataset(Dataset):
    """Records -> samples: decode, align (when landmarks are known), resize to ``crop_size``, augment."""

    def __init__(self, rec: Records, crop_size: int, align_size: int = 224, augment=None):
        self.rec, self.crop_size, self.align_size, self.augment = rec, int(crop_size), int(align_size), augment
        self.bad: list[str] = []

    def __len__(self) -> int:
        return len(self.rec)

    def load(self, i: int) -> torch.Tensor:
        """uint8 (3, crop_size, crop_size) of row i, before augmentation."""
        from torchvision.io import ImageReadMode, decode_image

        path = self.rec.paths[i]
        img = decode_image(str(path), mode=ImageReadMode.RGB)
        lm = self.rec.landmarks[i]
        if not np.isnan(lm).any():
            from eri.align import align_face

            img = torch.from_numpy(align_face(img.permute(1, 2, 0).numpy(), lm, self.align_size)).permute(2, 0, 1)
        return resize_uint8(img[None], self.crop_size)[0].contiguous()

    def __getitem__(self, i: int) -> dict:
        r = self.rec
        sample = {
            "va": torch.from_numpy(r.va[i]),
            "va_mask": torch.tensor(bool(r.va_mask[i])),
            "expr": torch.tensor(int(r.expr[i])),
            "au": torch.from_numpy(r.au[i]),
            "au_mask": torch.from_numpy(r.au_mask[i]),
            "valid": torch.tensor(True),
        }
        try:
            img = self.load(i)
        except Exception as e:  # noqa: BLE001 - a bad file is reported and masked out, the epoch goes on
            msg = f"{r.paths[i]}: cannot read image ({type(e).__name__}: {e})"
            self.bad.append(msg)
            warnings.warn(f"{r.name}: {msg}; sample masked out", stacklevel=2)
            img = torch.zeros(3, self.crop_size, self.crop_size, dtype=torch.uint8)
            sample.update(
                va_mask=torch.tensor(False),
                expr=torch.tensor(-1),
                au_mask=torch.zeros(N_AU, dtype=torch.bool),
                valid=torch.tensor(False),
            )
        sample["image"] = self.augment(img) if self.augment is not None else img
        return sample


class MixSampler(Sampler):
    """Mixes datasets of a ConcatDataset with configured weights: each of ``num_samples`` draws picks
    dataset d with probability w_d, then a uniform row of d (with replacement). Seeded per epoch
    (``set_epoch``, which Lightning calls), so a resumed run draws the epoch an uninterrupted one would."""

    def __init__(self, sizes: list[int], weights: list[float], num_samples: int, seed: int = 0):
        if (
            len(sizes) != len(weights)
            or any(w < 0 for w in weights)
            or not any(w > 0 and s > 0 for s, w in zip(sizes, weights))
        ):
            raise ValueError(
                f"MixSampler: need one non-negative weight per dataset and a non-empty weighted one "
                f"(sizes {sizes}, weights {weights})"
            )
        w = torch.tensor([wt if s > 0 else 0.0 for s, wt in zip(sizes, weights)], dtype=torch.float64)
        self.p = w / w.sum()
        self.sizes = torch.tensor(sizes)
        self.offsets = torch.cumsum(torch.tensor([0, *sizes[:-1]]), 0)
        self.num_samples, self.seed, self.epoch = int(num_samples), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        d = torch.multinomial(self.p, self.num_samples, replacement=True, generator=g)
        u = torch.rand(self.num_samples, generator=g, dtype=torch.float64)
        idx = self.offsets[d] + (u * self.sizes[d]).long().clamp_max(self.sizes[d] - 1)
        return iter(idx.tolist())
