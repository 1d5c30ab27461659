"""The feature store: one `.npz` per video per stream, written atomically, plus a per-stream index.

Layout (what extraction writes for real videos and what the synthetic generator imitates)::

    <root>/features/<stream>/meta.json   {"stream", "dim", "rate", "dtype", "extractor", "config_hash", ...}
    <root>/features/<stream>/index.csv   File_ID, n_steps, n_valid  (one row per stored video)
    <root>/features/<stream>/<File_ID>.npz
        features   (T, D) float16 or float32
        valid      (T,)   bool    per-step validity (False: no face found in that frame)
        timestamps (T,)   float32 seconds from the start of the video

File ids are stored without the brackets of `data_info.csv` (``[00001]`` -> ``00001``).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd


class StoreError(RuntimeError):
    """A feature store that is missing, inconsistent or holds a bad array."""


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path`` then rename it into place.

    A reader never sees a half-written file, and an interrupted job leaves no partial output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _write_npz(f, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but byte-identical across runs (fixed zip timestamps), so the same
    inputs give the same files."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


class FeatureStore:
    """Reads and writes the per-video arrays of one dataset root."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dir = self.root / "features"

    # ---------------------------------------------------------------- writing
    def write_meta(self, stream: str, meta: dict) -> None:
        atomic_write_text(self.dir / stream / "meta.json", json.dumps(meta, indent=2, sort_keys=True))

    def write(self, stream: str, vid: str, features: np.ndarray, valid: np.ndarray, timestamps: np.ndarray,
              extra: dict[str, np.ndarray] | None = None) -> None:
        """``extra``: more arrays in the same file (extraction stores its ``config_hash``; readers ignore them)."""
        features = np.asarray(features)
        if features.ndim != 2:
            raise StoreError(f"{stream}/{vid}: features must be (T, D), got shape {features.shape}")
        n = len(features)
        if len(valid) != n or len(timestamps) != n:
            raise StoreError(f"{stream}/{vid}: features, valid and timestamps differ in length")
        arrays = {"features": features, "valid": np.asarray(valid, bool), "timestamps": np.asarray(timestamps, np.float32)}
        arrays.update(extra or {})
        atomic_write_bytes(self.dir / stream / f"{vid}.npz", lambda f: _write_npz(f, arrays))

    def write_index(self, stream: str, rows: list[dict] | pd.DataFrame) -> None:
        df = pd.DataFrame(rows, columns=["File_ID", "n_steps", "n_valid"])
        atomic_write_text(self.dir / stream / "index.csv", df.to_csv(index=False))

    # ---------------------------------------------------------------- reading
    def streams(self) -> list[str]:
        return sorted(p.parent.name for p in self.dir.glob("*/meta.json"))

    def meta(self, stream: str) -> dict:
        path = self.dir / stream / "meta.json"
        if not path.exists():
            have = ", ".join(self.streams()) or "none"
            raise StoreError(f"stream '{stream}' not found: {path} is missing (streams in this store: {have})")
        return json.loads(path.read_text())

    def index(self, stream: str) -> pd.DataFrame:
        path = self.dir / stream / "index.csv"
        if not path.exists():
            raise StoreError(f"{path} is missing: the store for stream '{stream}' is incomplete")
        return pd.read_csv(path, dtype={"File_ID": str})

    def load(self, stream: str, vid: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(features float32 (T, D), valid bool (T,))`` for one video."""
        path = self.dir / stream / f"{vid}.npz"
        try:
            with np.load(path) as z:
                feats, valid = z["features"].astype(np.float32), z["valid"].astype(bool)
        except FileNotFoundError:
            raise StoreError(f"{path} is missing (video {vid}, stream {stream})") from None
        except (OSError, ValueError, KeyError) as e:
            raise StoreError(f"{path} is unreadable: {e}") from e
        bad = ~np.isfinite(feats).all(axis=1)
        if bad.any():
            # NaN/inf steps are treated like frames without a face: flagged invalid, never fed to a model.
            feats[bad] = 0.0
            valid = valid & ~bad
        return feats, valid


class MuseFeatureDir:
    """MuSe 2022 organiser features, ``<root>/feats/<NAME>/<File_ID>.csv``, read like a FeatureStore.

    Each CSV has two meta columns (timestamp and segment/id) before the feature columns. Rows with a
    NaN (e.g. FAUs where no face was found) are flagged invalid. Reading CSV is slow: for more than a
    quick look, convert once with ``FeatureStore.write`` and train from the store.
    """

    META_COLUMNS = 2

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dir = self.root / "feats"

    def streams(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir()) if self.dir.is_dir() else []

    def _files(self, stream: str) -> list[Path]:
        d = self.dir / stream
        if not d.is_dir():
            raise StoreError(f"stream '{stream}' not found: {d} is missing (streams here: {self.streams() or 'none'})")
        return sorted(d.glob("*.csv"))

    def meta(self, stream: str) -> dict:
        files = self._files(stream)
        if not files:
            raise StoreError(f"{self.dir / stream} holds no CSV files")
        ncol = len(pd.read_csv(files[0], nrows=1).columns)
        return {"stream": stream, "dim": ncol - self.META_COLUMNS, "rate": "frame", "extractor": "muse2022"}

    def index(self, stream: str) -> pd.DataFrame:
        from eri.data.labels import normalise_id

        return pd.DataFrame({"File_ID": [normalise_id(p.stem) for p in self._files(stream)]})

    def load(self, stream: str, vid: str) -> tuple[np.ndarray, np.ndarray]:
        path = self.dir / stream / f"{vid}.csv"
        if not path.exists():
            raise StoreError(f"{path} is missing (video {vid}, stream {stream})")
        try:
            values = pd.read_csv(path).iloc[:, self.META_COLUMNS :].to_numpy(dtype=np.float32)
        except (ValueError, pd.errors.ParserError) as e:
            raise StoreError(f"{path} is unreadable: {e}") from e
        valid = np.isfinite(values).all(axis=1)
        values[~valid] = 0.0
        return values, valid


def open_features(root: str | Path):
    """The feature source of a dataset root: the npz store if present, else MuSe ``feats/`` CSVs."""
    root = Path(root)
    if (root / "features").is_dir():
        return FeatureStore(root)
    if (root / "feats").is_dir():
        return MuseFeatureDir(root)
    raise StoreError(f"{root}: no feature store (features/) or MuSe 2022 feature folder (feats/) found")
