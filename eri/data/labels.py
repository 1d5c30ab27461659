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
from eri.errors import LabelError
from eri.io import name_problem
from eri.registry import Registry

__all__ = ["LabelError", "normalise_id", "read_manifest", "read_label_ids"]

_ABAW5_SPLITS = {"train": "train", "val": "val", "test": "test"}
_MUSE_SPLITS = {"train": "train", "devel": "val", "test": "test"}


def normalise_id(raw) -> str:
    """``[00001]`` / ``00001`` / ``1`` -> ``00001`` (the form used for feature file names)."""
    s = str(raw).strip().strip("[]").strip()
    return s.zfill(5) if s.isdigit() else s


def read_table(path: Path, **kw) -> pd.DataFrame:
    """A CSV with at least one row; every way it can be unreadable is a LabelError naming it."""
    if not path.is_file():
        raise LabelError(f"{path} not found")
    try:
        df = pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        raise LabelError(f"{path} is empty") from None
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        raise LabelError(f"{path} is not a readable CSV ({type(e).__name__}: {e})") from None
    if df.empty:
        raise LabelError(f"{path} has a header but no rows")
    return df


def _require_columns(df: pd.DataFrame, needed, path: Path) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise LabelError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


def _ids(raw: pd.Series, path: Path) -> pd.Series:
    """Normalised ids, each one a plain file name (ids become feature file names); else LabelError."""
    if raw.isna().any():
        rows = [int(i) + 2 for i in np.flatnonzero(raw.isna())[:5]]  # +2: header line, 1-based
        raise LabelError(f"{path}: empty id on line(s) {rows}")
    ids = raw.map(normalise_id)
    bad = [(line, problem) for line, problem in enumerate(map(name_problem, ids), start=2) if problem]
    if bad:
        line, problem = bad[0]
        raise LabelError(f"{path} line {line}: bad id {problem} ({len(bad)} bad in all); ids must be plain file names")
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise LabelError(f"{path}: duplicate File_ID(s) {list(dup[:10])}{' ...' if len(dup) > 10 else ''}")
    return ids


def _numeric_labels(df: pd.DataFrame, path: Path) -> None:
    """Emotion columns to floats; a non-empty cell that is not a number is a LabelError naming it."""
    for e in EMOTIONS:
        raw = df[e]
        values = pd.to_numeric(raw, errors="coerce")
        text = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if text.any():
            k = int(np.flatnonzero(text)[0])
            raise LabelError(
                f"{path}: non-numeric value {str(raw.iloc[k])!r} in column {e} for File_ID {df['File_ID'].iloc[k]} "
                f"({int(text.sum())} such cell(s))"
            )
        df[e] = values.astype(float)


def _check_labels(df: pd.DataFrame, path: Path) -> None:
    values = df[list(EMOTIONS)].to_numpy(dtype=float)
    labeled = ~np.isnan(values).all(axis=1)
    partial = labeled & np.isnan(values).any(axis=1)
    if partial.any():
        raise LabelError(f"{path}: rows with some but not all emotion labels: {list(df['File_ID'][partial][:10])}")
    bad = labeled & ~((values >= 0) & (values <= 1)).all(axis=1)
    if bad.any():
        raise LabelError(f"{path}: labels outside [0, 1] for File_ID(s) {list(df['File_ID'][bad][:10])}")


def _finish(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    _numeric_labels(df, path)
    _check_labels(df, path)
    keep = ["File_ID", "split", *EMOTIONS] + [c for c in ("Age", "Country") if c in df.columns]
    return df[keep].reset_index(drop=True)


def read_abaw5(root: str | Path) -> pd.DataFrame:
    """``<root>/data_info.csv`` with File_ID, Split, the 7 emotions (empty on Test), Age, Country."""
    path = Path(root) / "data_info.csv"
    if not path.exists():
        raise LabelError(f"{path} not found (ABAW5 layout expects data_info.csv in the dataset root)")
    df = read_table(path, dtype={"File_ID": str})
    _require_columns(df, ["File_ID", "Split", *EMOTIONS], path)
    df["File_ID"] = _ids(df["File_ID"], path)
    split = df["Split"].astype(str).str.strip().str.lower()
    unknown = sorted(set(split) - set(_ABAW5_SPLITS))
    if unknown:
        raise LabelError(f"{path}: unknown Split value(s) {unknown}; expected Train, Val or Test")
    df["split"] = split.map(_ABAW5_SPLITS)
    return _finish(df, path)


def _read_partition(path: Path) -> pd.DataFrame:
    part = read_table(path, dtype=str)
    if part.shape[1] < 2:
        raise LabelError(f"{path}: expected an id column and a partition column, found {list(part.columns)}")
    split = part.iloc[:, -1].astype(str).str.strip()
    part = pd.DataFrame({"File_ID": _ids(part.iloc[:, 0], path), "split": split})
    unknown = sorted(set(part["split"]) - set(_MUSE_SPLITS))
    if unknown:
        raise LabelError(f"{path}: unknown partition value(s) {unknown}; expected train, devel or test")
    part["split"] = part["split"].map(_MUSE_SPLITS)
    return part


def read_muse2022(root: str | Path) -> pd.DataFrame:
    """``labels.csv`` (File_ID + 7 emotions) and ``partition.csv`` (split in the last column)."""
    root = Path(root)
    lab_path, part_path = root / "labels.csv", root / "partition.csv"
    for p in (lab_path, part_path):
        if not p.exists():
            raise LabelError(f"{p} not found (MuSe 2022 layout expects labels.csv and partition.csv)")
    part = _read_partition(part_path)
    labels = read_table(lab_path, dtype={"File_ID": str})
    _require_columns(labels, ["File_ID", *EMOTIONS], lab_path)
    labels["File_ID"] = _ids(labels["File_ID"], lab_path)
    missing = sorted(set(labels["File_ID"]) - set(part["File_ID"]))
    if missing:
        raise LabelError(f"{lab_path}: File_ID(s) {missing[:10]} have labels but no row in {part_path}")
    df = part.merge(labels[["File_ID", *EMOTIONS]], on="File_ID", how="left")
    return _finish(df, lab_path)


READERS = Registry("layout")  # label-file formats by `data.layout` name
READERS.add("abaw5", read_abaw5, description="ABAW5 / Hume-Reaction: data_info.csv (File_ID, Split, 7 emotions)")
READERS.add("muse2022", read_muse2022, description="MuSe 2022 Reaction: labels.csv + partition.csv")


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


def train_mean(manifest: pd.DataFrame, usable) -> np.ndarray:
    """The mean training label over the usable training videos: what a model predicts for a video it
    cannot read. ``manifest``: a run's (its ``train`` rows are the training part of the fold pool under
    ``data.cv``); ``usable``: one flag per train row, in order. float32, as training computes it."""
    y = manifest.loc[manifest["split"] == "train", list(EMOTIONS)].to_numpy(np.float32)
    return y[np.asarray(usable, bool)].mean(axis=0)


def read_label_ids(root: str | Path, layout: str = "auto") -> tuple[list[str], list[str]]:
    """``(ids, problems)`` of a label file, leniently: for extraction, which needs ids, not labels.

    Label values are not read at all; an id that is not a plain file name or is repeated is left
    out and described in ``problems``. A file that cannot be read at all is still a LabelError."""
    root = Path(root)
    if layout == "auto":
        layout = "abaw5" if (root / "data_info.csv").exists() else "muse2022" if (root / "partition.csv").exists() else ""
    if layout not in READERS:
        raise LabelError(f"{root}: no data_info.csv (ABAW5) or partition.csv (MuSe 2022) found")
    path = root / ("data_info.csv" if layout == "abaw5" else "partition.csv")
    df = read_table(path, dtype=str)
    column = "File_ID" if layout == "abaw5" else df.columns[0]
    _require_columns(df, [column], path)
    ids, problems, seen = [], [], set()
    for line, raw in enumerate(df[column], start=2):
        vid = normalise_id(raw) if isinstance(raw, str) else None
        problem = name_problem(vid) or ("repeated" if vid in seen else None)
        if problem:
            problems.append(f"{path} line {line}: id {raw!r} left out ({problem})")
        else:
            ids.append(vid)
            seen.add(vid)
    return ids, problems
