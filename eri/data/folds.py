"""Deterministic cross-validation folds over a pool of splits (``data.cv``).

A K-fold run of fold ``i`` trains on the pool minus fold ``i`` and predicts fold ``i``: its "val"
split *is* the held-out fold, so its ``predictions_val.csv`` are out-of-fold predictions, and the K
runs together predict every pool video once, each with a model that never saw it. The test split is
never part of the pool. Folds depend only on the ids, ``cv.seed`` and the grouping, not on the run's
seed, so every member of an ensemble sees the same folds.

- By video (default): a seeded permutation dealt round-robin (fold sizes differ by at most one).
  Hume-Reaction's ``data_info.csv`` has no subject column, so video folds can put one subject in
  two folds (the same person in training and in the held-out fold: optimistic out-of-fold scores).
- By group (``group_by: COLUMN``): whole groups (e.g. subjects) go to one fold, largest groups first
  onto the smallest fold, in a seeded order. ``COLUMN`` is a column of the label file or of
  ``<root>/videos.csv`` (the synthetic generator writes ``subject`` there).

Checkpoint selection (``cv.select``): ``last`` (default) keeps the last epoch, so the held-out fold is
never used to choose anything and its scores are honest; ``best`` picks the epoch on the held-out
fold, as Netease Fuxi's ABAW5 entry did, which makes the out-of-fold scores slightly optimistic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eri.data.labels import normalise_id, read_manifest, read_table
from eri.errors import ConfigError


def assign_folds(ids: list[str], k: int, seed: int = 0, groups: list | None = None) -> np.ndarray:
    """Fold index (0..k-1) of each id, deterministic in (sorted ids, k, seed, groups)."""
    if k < 2:
        raise ConfigError(f"data.cv.folds must be >= 2, got {k}")
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")  # independent of the input order
    rng = np.random.default_rng(seed)
    fold = np.empty(len(ids), np.int64)
    if groups is None:
        if len(ids) < k:
            raise ConfigError(f"data.cv: {len(ids)} videos in the pool cannot make {k} folds")
        fold[order[rng.permutation(len(ids))]] = np.arange(len(ids)) % k
        return fold
    g = pd.Series(np.asarray(groups, dtype=object)[order]).astype(str)
    names = np.array(sorted(g.unique()))
    if len(names) < k:
        raise ConfigError(f"data.cv: {len(names)} groups cannot make {k} folds")
    names = names[rng.permutation(len(names))]
    sizes = g.value_counts()
    load = np.zeros(k, np.int64)
    where = {}
    for name in sorted(names, key=lambda n: -sizes[n]):  # stable: ties keep the seeded order
        f = int(np.argmin(load))
        where[name] = f
        load[f] += sizes[name]
    fold[order] = g.map(where).to_numpy()
    return fold


def group_labels(root: Path, manifest: pd.DataFrame, column: str) -> list:
    """``column`` for every manifest row, from a label file (``data_info.csv``, ``labels.csv``,
    ``partition.csv``) or ``<root>/videos.csv``, whichever has it."""
    for name in ("data_info.csv", "labels.csv", "partition.csv", "videos.csv"):
        table = _table(Path(root) / name)
        if table is None or column not in table.columns:
            continue
        values = table.drop_duplicates("File_ID").set_index("File_ID")[column]
        missing = sorted(set(manifest["File_ID"]) - set(values.index))
        if missing:
            raise ConfigError(f"data.cv.group_by: {root / name} has no '{column}' for File_ID(s) {missing[:5]}")
        return values.loc[manifest["File_ID"]].tolist()
    raise ConfigError(f"data.cv.group_by: no column '{column}' in {root}'s label files or videos.csv")


def _table(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    df = read_table(path, dtype=str)
    ids = df["File_ID"] if "File_ID" in df.columns else df.iloc[:, 0]
    return df.assign(File_ID=ids.map(normalise_id))


def apply_cv(manifest: pd.DataFrame, root: Path, folds: int, fold: int, pool: list, seed: int = 0,
             group_by: str | None = None) -> pd.DataFrame:
    """The manifest of fold ``fold``: pool rows in that fold become "val" (held out), the other pool rows
    "train"; test rows stay; rows of a split outside the pool are left out of this run."""
    bad = sorted(set(pool) - {"train", "val"})
    if bad or not pool:
        raise ConfigError(f"data.cv.pool must be a non-empty subset of [train, val] (never test), got {list(pool)}")
    if not 0 <= fold < folds:
        raise ConfigError(f"data.cv.fold must be in 0..{folds - 1}, got {fold}")
    in_pool = manifest["split"].isin(pool)
    rows = manifest[in_pool].reset_index(drop=True)
    groups = group_labels(root, rows, group_by) if group_by else None
    which = assign_folds(rows["File_ID"].tolist(), folds, seed, groups)
    rows["split"] = np.where(which == fold, "val", "train")
    return pd.concat([rows, manifest[manifest["split"] == "test"]], ignore_index=True)


def split_manifest(root: str | Path, layout: str, cv: dict | None) -> pd.DataFrame:
    """The manifest a run trains and scores on: the label file's, with the folds of ``cv`` (``data.cv``
    as a dict) applied when ``cv["folds"]`` is set (its held-out fold becomes "val")."""
    manifest = read_manifest(root, layout)
    if cv and cv.get("folds"):
        manifest = apply_cv(manifest, Path(root), cv["folds"], cv["fold"], list(cv["pool"]), cv["seed"], cv["group_by"])
    return manifest
