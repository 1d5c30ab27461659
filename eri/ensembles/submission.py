"""The challenge submission: a run's (or an ensemble's) test predictions as the organisers' CSV.

ABAW5 layout: the ``Test`` rows of ``data_info.csv``, in its order, ``File_ID`` exactly as written
there (``[00004]``, brackets kept), then the 7 emotions in the official order (`eri.constants.EMOTIONS`).
MuSe 2022 layout: the ``test`` rows of ``partition.csv`` (its last column), in its order, under its own
id column (first column, name and ids as written there), then the 7 emotions. The partition file is
the one listing every test video (``labels.csv`` has no rows for the unlabelled test set), so it is
the one whose ids an organiser would match.

Predictions are keyed by the normalised ids of the feature store (``00004``, `eri.data.labels.normalise_id`).
Before anything is written, the data the run was trained on (its ``dataset.json``, `eri.data.signature`)
is compared with what its data root holds now: re-extracted features, an edited label file or another
split assignment are refused, since the predictions would belong to other data. A run written before
runs recorded it has its signature recomputed from ``config.yaml``'s ``data.root``, with a warning that
a change since training cannot be seen. Then every Test id must appear exactly once, with 7 finite
values in [0, 1]; the file is written atomically.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from eri.constants import EMOTIONS
from eri.data.labels import normalise_id, read_table
from eri.data.signature import dataset_signature, differences, resolve_layout, shared_signature
from eri.errors import InputError
from eri.io import atomic_write_text
from eri.runs import SIGNATURE, Run, is_ensemble, open_run, predictions_file, read_predictions


def ensemble_signature(runs) -> dict:
    """The signature an ensemble's member runs share (`shared_signature`); ``recomputed`` lists the
    runs that had no ``dataset.json`` (trained before runs recorded it)."""
    sigs, recomputed = {}, []
    for run in runs:
        sigs[str(run)], again = Run(run).saved_or_recomputed_signature()
        if again:
            recomputed.append(str(run))
    if recomputed:
        warnings.warn(f"{len(recomputed)} member run(s) have no {SIGNATURE} (trained before runs recorded it), e.g. "
                      f"{recomputed[0]}: their data signature is computed now from their config.yaml")
    return {**shared_signature(sigs), "recomputed": recomputed}


def checked_signature(source: Path) -> dict:
    """The signature ``source`` was trained on, refused unless its data root still holds the same data."""
    run = open_run(source)
    ensemble = run.kind == "ensemble"
    saved = run.signature()
    if saved is None:
        warnings.warn(f"{source}: no {SIGNATURE} (written before runs recorded the data they were trained on): the "
                      f"signature is computed now from the data.root of {'its member runs' if ensemble else 'its'} "
                      "config.yaml; a change to the labels or features since training cannot be detected")
        saved = ensemble_signature(run.member_runs()) if ensemble else dataset_signature(*run.data())
        recorded = False
    else:
        recorded = True
    if saved.get("agree") is False:
        diff = "; ".join(f"{k}: {', '.join(v)}" for k, v in saved.get("differences", {}).items())
        raise InputError(f"{source}: its members were trained on different data ({diff}); no one data root to submit for")
    missing = [k for k in ("root", "layout", "streams", "labels", "splits", "features") if k not in saved]
    if missing:
        raise InputError(f"{source / SIGNATURE} is damaged (no {', '.join(missing)})")
    if recorded:
        root, streams, layout = (saved["root"], saved["streams"], saved["layout"]) if ensemble else run.data()
        now = dataset_signature(root, streams, layout)
        diff = differences(saved, now)
        if diff:
            raise InputError(f"{source} was trained on other data than {root} holds now: {'; '.join(diff)}; "
                             "retrain on the current data, or restore the data it was trained on")
        saved = now
    return saved


def submission_rows(root: Path, layout: str) -> tuple[str, list[str], Path]:
    """``(id column, raw test ids in file order, file)``: the rows a submission must hold (module docstring)."""
    layout = resolve_layout(root, layout)
    path = root / ("data_info.csv" if layout == "abaw5" else "partition.csv")
    df = read_table(path, dtype=str, keep_default_na=False)
    if layout == "abaw5":
        column, split = "File_ID", df["Split"] if "Split" in df.columns else None
    else:
        column, split = df.columns[0], df.iloc[:, -1] if df.shape[1] > 1 else None
    if split is None:
        raise InputError(f"{path}: no split column")
    ids = df.loc[split.str.strip().str.lower() == "test", column].tolist()
    if not ids:
        raise InputError(f"{path}: no Test rows: nothing to submit")
    return column, ids, path


def check_submission(sub: pd.DataFrame, column: str, ids: list[str], where: str) -> None:
    """Refuse (one line naming ``where``) anything but ``column`` + the 7 emotions, one row per id of
    ``ids`` in that order, finite values in [0, 1]."""
    want = [column, *EMOTIONS]
    if list(sub.columns) != want:
        raise InputError(f"{where}: columns {list(sub.columns)}, expected {want}")
    got = sub[column].tolist()
    dup = sorted(set(sub[column][sub[column].duplicated()]))
    if dup:
        raise InputError(f"{where}: File_ID(s) {dup[:5]} appear more than once")
    have, want_ids = set(got), set(ids)
    missing, extra = [i for i in ids if i not in have], [i for i in got if i not in want_ids]
    if missing or extra:
        raise InputError(f"{where}: {len(missing)} Test id(s) missing (e.g. {missing[:3]}), "
                         f"{len(extra)} not a Test id (e.g. {extra[:3]})")
    if got != ids:
        k = next(n for n, (a, b) in enumerate(zip(got, ids)) if a != b)
        raise InputError(f"{where}: rows out of order: row {k + 1} is {got[k]}, the label file has {ids[k]} there")
    values = sub[list(EMOTIONS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise InputError(f"{where}: missing or non-numeric value(s) for {int(bad.sum())} video(s), "
                         f"e.g. {got[int(np.argmax(bad))]}")
    out = ((values < 0) | (values > 1)).any(axis=1)
    if out.any():
        raise InputError(f"{where}: value(s) outside [0, 1] for {int(out.sum())} video(s), "
                         f"e.g. {got[int(np.argmax(out))]} (range {values.min():.4f} .. {values.max():.4f}); "
                         "a combiner that is not bounded: use --clip")


def build_submission(pred: pd.DataFrame, column: str, ids: list[str], where: str, clip: bool = False) -> pd.DataFrame:
    """The submission rows for raw Test ``ids`` from predictions keyed by normalised id."""
    if pred.index.duplicated().any():
        dup = sorted(set(pred.index[pred.index.duplicated()]))
        raise InputError(f"{where}: File_ID(s) {dup[:5]} appear more than once")
    keys = [normalise_id(i) for i in ids]
    missing = [i for i, k in zip(ids, keys) if k not in pred.index]
    if missing:
        raise InputError(f"{where}: no prediction for {len(missing)} of {len(ids)} Test video(s), e.g. {missing[:3]}")
    extra = sorted(set(pred.index) - set(keys))
    if extra:
        raise InputError(f"{where}: {len(extra)} predicted video(s) are not Test rows of the label file "
                         f"(e.g. {extra[:3]}): predictions of another split or dataset")
    values = pred.loc[keys, list(EMOTIONS)].to_numpy(float)
    if clip:
        values = np.where(np.isnan(values), values, np.clip(values, 0.0, 1.0))
    sub = pd.DataFrame(values, columns=list(EMOTIONS))
    sub.insert(0, column, ids)
    return sub


def submit(source: str | Path, out: str | Path, clip: bool = False) -> dict:
    """Write the submission CSV of a run or ensemble directory ``source`` to ``out`` (module docstring)."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise InputError(f"{source}: not a run or ensemble directory")
    if out.is_dir():
        raise InputError(f"--out {out} is a directory: give a file name")
    if out.resolve() == (source / predictions_file("test")).resolve():
        raise InputError(f"--out {out} would overwrite the predictions it is made from: give another file")
    sig = checked_signature(source)
    root = Path(sig["root"])
    column, ids, labels = submission_rows(root, sig["layout"])
    pred = read_predictions(source, "test")
    where = source / predictions_file("test")
    sub = build_submission(pred, column, ids, str(where), clip)
    check_submission(sub, column, ids, f"submission from {where}")
    atomic_write_text(out, sub.to_csv(index=False, float_format="%.6f"))
    return {"out": str(out), "rows": len(sub), "labels": str(labels), "ensemble": is_ensemble(source)}
