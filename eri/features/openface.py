"""`openface`: AU features imported from OpenFace 2 ``FeatureExtraction`` CSVs (paper 004's local stream).

Paper 004 took its 34-d AU vector per frame from OpenFace: the intensities (``AU*_r``, 0-5) of 17
AUs and their occurrences (``AU*_c``, 0/1). OpenFace itself is a C++ tool we do not ship; users who
ran it (``FeatureExtraction -f video.mp4 -aus -out_dir ...``) import its CSVs with this class.

Output, 34 columns in this fixed order (`AU_COLUMNS`):
``AU01_r AU02_r AU04_r AU05_r AU06_r AU07_r AU09_r AU10_r AU12_r AU14_r AU15_r AU17_r AU20_r AU23_r
AU25_r AU26_r AU45_r`` then ``AU01_c ... AU45_c`` (the same 17 AUs, same order).
OpenFace also writes an occurrence for AU28 (lip suck), which has no intensity model; we drop it so
both halves describe the same AUs and the width is the paper's 34 (the authors' public code fed 35
values, this extra occurrence included).

Rows: one per video frame, sorted by ``frame``. ``valid`` = ``success == 1`` and
``confidence >= min_confidence`` (default 0: OpenFace's own success flag only; the papers give no
threshold) and no NaN among the 34 values; ``timestamps`` = OpenFace's ``timestamp`` (seconds).
CSVs from the multi-face tool (a ``face_id`` column, several rows per frame) keep the most confident
face of each frame. OpenFace pads its column names with a space (``" AU01_r"``); we strip them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eri.features.base import Extractor

AU_ORDER = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
AU_COLUMNS = tuple(f"AU{a:02d}_r" for a in AU_ORDER) + tuple(f"AU{a:02d}_c" for a in AU_ORDER)
META_COLUMNS = ("frame", "timestamp", "success", "confidence")


def read_openface_csv(path: str | Path, min_confidence: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One OpenFace CSV -> ``(features (T, 34) float32, valid (T,) bool, timestamps (T,) float32)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: OpenFace CSV not found")
    wanted = {*AU_COLUMNS, *META_COLUMNS, "face_id"}
    try:
        df = pd.read_csv(path, usecols=lambda c: c.strip() in wanted, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable OpenFace CSV ({e})") from e
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in (*META_COLUMNS, *AU_COLUMNS) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing OpenFace column(s) {missing} (run FeatureExtraction with -aus)")
    try:
        df = df.apply(pd.to_numeric, errors="raise")
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: non-numeric values in OpenFace columns ({e})") from e
    if "face_id" in df.columns:  # multi-face output: the most confident face of each frame
        df = df.sort_values(["frame", "confidence"], ascending=[True, False], kind="stable")
        df = df.drop_duplicates("frame", keep="first")
    else:
        if df["frame"].duplicated().any():
            raise ValueError(f"{path}: duplicate frame numbers without a face_id column")
        df = df.sort_values("frame", kind="stable")
    feats = df[list(AU_COLUMNS)].to_numpy(np.float32)
    finite = np.isfinite(feats).all(axis=1)
    feats[~finite] = 0.0
    valid = (df["success"].to_numpy() == 1) & (df["confidence"].to_numpy() >= min_confidence) & finite
    return feats, valid, df["timestamp"].to_numpy(np.float32)


class OpenFaceAU(Extractor):
    """Kind ``file``: finds ``pattern`` (``{root}`` and ``{id}`` filled; relative paths are under the
    dataset root) for a video and imports its AUs. ``min_confidence``: frames OpenFace tracked with
    a lower confidence are marked invalid."""

    name = "openface"
    kind = "file"
    dim = len(AU_COLUMNS)

    def __init__(self, pattern: str = "openface/{id}.csv", min_confidence: float = 0.0):
        super().__init__(pattern=pattern, min_confidence=min_confidence)
        if "{id}" not in pattern:
            raise ValueError(f"openface: pattern {pattern!r} must contain {{id}}")
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(f"openface: min_confidence must be in [0, 1], got {min_confidence}")
        self.pattern, self.min_confidence = pattern, float(min_confidence)

    def path(self, video_id: str, root: str | Path) -> Path:
        p = Path(self.pattern.format(id=video_id, root=root))
        return p if p.is_absolute() else Path(root) / p

    def __call__(self, video_id: str, root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        path = self.path(video_id, root)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: OpenFace CSV for video {video_id} not found (pattern {self.pattern!r})")
        return read_openface_csv(path, self.min_confidence)

    def metadata(self) -> dict:
        return {"columns": list(AU_COLUMNS), "source": "OpenFace 2 FeatureExtraction CSV"}
