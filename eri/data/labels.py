"""Label readers: the ABAW5 and MuSe 2022 layouts of Hume-Reaction, both giving one manifest.

The manifest is a DataFrame with one row per video: ``File_ID`` (str, no brackets), ``split``
(``train``/``val``/``test``) and the 7 emotion columns (NaN where a split is unlabeled, e.g. the
ABAW5 test set). Readers validate everything a training run would otherwise trip over later, and
name the file and the problem in the error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eri.constants import EMOTIONS


class LabelError(ValueError):
    """A label file that is malformed: missing columns, duplicate ids, bad values."""


_ABAW5_SPLITS = {"train": "train", "val": "val", "test": "test"}
_MUSE_SPLITS = {"train": "train", "devel": "val", "test": "test"}


def normalise_id(raw) -> str:
    """``[00001]`` / ``00001`` / ``1`` -> ``00001`` (the form used for feature file names)."""
    s = str(raw).strip().strip("[]").strip()
    return s.zfill(5) if s.isdigit() else s


def _require_columns(df: pd.DataFrame, needed, path: Path) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise LabelError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


def _check_ids(ids: pd.Series, path: Path) -> None:
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise LabelError(f"{path}: duplicate File_ID(s) {list(dup[:10])}{' ...' if len(dup) > 10 else ''}")


def _check_labels(df: pd.DataFrame, path: Path) -> None:
    values = df[list(EMOTIONS)].to_numpy(dtype=float)
    labeled = ~np.isnan(values).all(axis=1)
    partial = labeled & np.isnan(values).any(axis=1)
    if partial.any():
        raise LabelError(f"{path}: rows with some but not all emotion labels: {list(df['File_ID'][partial][:10])}")
    bad = labeled & ((values < 0) | (values > 1)).any(axis=1)
    if bad.any():
        raise LabelError(f"{path}: labels outside [0, 1] for File_ID(s) {list(df['File_ID'][bad][:10])}")


def _finish(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    _check_ids(df["File_ID"], path)
    for e in EMOTIONS:
        df[e] = pd.to_numeric(df[e], errors="coerce")
    _check_labels(df, path)
    keep = ["File_ID", "split", *EMOTIONS] + [c for c in ("Age", "Country") if c in df.columns]
    return df[keep].reset_index(drop=True)


def read_abaw5(root: str | Path) -> pd.DataFrame:
    """``<root>/data_info.csv`` with File_ID, Split, the 7 emotions (empty on Test), Age, Country."""
    path = Path(root) / "data_info.csv"
    if not path.exists():
        raise LabelError(f"{path} not found (ABAW5 layout expects data_info.csv in the dataset root)")
    df = pd.read_csv(path, dtype={"File_ID": str})
    _require_columns(df, ["File_ID", "Split", *EMOTIONS], path)
    df["File_ID"] = df["File_ID"].map(normalise_id)
    split = df["Split"].astype(str).str.strip().str.lower()
    unknown = sorted(set(split) - set(_ABAW5_SPLITS))
    if unknown:
        raise LabelError(f"{path}: unknown Split value(s) {unknown}; expected Train, Val or Test")
    df["split"] = split.map(_ABAW5_SPLITS)
    return _finish(df, path)


def read_muse2022(root: str | Path) -> pd.DataFrame:
    """``labels.csv`` (File_ID + 7 emotions) and ``partition.csv`` (split in the last column)."""
    root = Path(root)
    lab_path, part_path = root / "labels.csv", root / "partition.csv"
    for p in (lab_path, part_path):
        if not p.exists():
            raise LabelError(f"{p} not found (MuSe 2022 layout expects labels.csv and partition.csv)")
    part = pd.read_csv(part_path, dtype=str)
    if part.shape[1] < 2:
        raise LabelError(f"{part_path}: expected an id column and a partition column, found {list(part.columns)}")
    part = pd.DataFrame({"File_ID": part.iloc[:, 0].map(normalise_id), "split": part.iloc[:, -1].str.strip()})
    _check_ids(part["File_ID"], part_path)
    unknown = sorted(set(part["split"]) - set(_MUSE_SPLITS))
    if unknown:
        raise LabelError(f"{part_path}: unknown partition value(s) {unknown}; expected train, devel or test")
    part["split"] = part["split"].map(_MUSE_SPLITS)

    labels = pd.read_csv(lab_path, dtype={"File_ID": str})
    _require_columns(labels, ["File_ID", *EMOTIONS], lab_path)
    labels["File_ID"] = labels["File_ID"].map(normalise_id)
    _check_ids(labels["File_ID"], lab_path)
    missing = sorted(set(labels["File_ID"]) - set(part["File_ID"]))
    if missing:
        raise LabelError(f"{lab_path}: File_ID(s) {missing[:10]} have labels but no row in {part_path}")
    df = part.merge(labels[["File_ID", *EMOTIONS]], on="File_ID", how="left")
    return _finish(df, lab_path)


READERS = {"abaw5": read_abaw5, "muse2022": read_muse2022}


def read_manifest(root: str | Path, layout: str = "auto") -> pd.DataFrame:
    """Read the labels of a dataset root in either layout (``auto`` picks by the files present)."""
    root = Path(root)
    if layout == "auto":
        layout = "abaw5" if (root / "data_info.csv").exists() else "muse2022" if (root / "labels.csv").exists() else ""
        if not layout:
            raise LabelError(f"{root}: no data_info.csv (ABAW5) or labels.csv + partition.csv (MuSe 2022) found")
    if layout not in READERS:
        raise LabelError(f"unknown layout '{layout}'; valid: {sorted(READERS)} or auto")
    return READERS[layout](root)
