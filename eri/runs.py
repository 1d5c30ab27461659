"""The run directory: what tools/train.py and tools/ensemble.py write, named once, and read back here.

    <run>/config.yaml               the resolved config (rerun with ``tools/train.py --config <run>/config.yaml``)
    <run>/checkpoints/best-*.ckpt   the best epoch by val mean PCC; last.ckpt for resuming
    <run>/model.ckpt                the best model alone, self-contained: `eri.load_model` / tools/predict.py
    <run>/logs/version_<k>/         per-step and per-epoch logs, one folder per attempt
    <run>/metrics.json              {"val", "test", "ceiling", "checkpoint"}; written last: marks the run finished
    <run>/predictions_<split>.csv   File_ID + the 7 intensities
    <run>/labels.csv                the labels it was scored on: File_ID, split, the 7 emotions, usable
                                    (1: trained on or predicted by the model; 0: the train-label mean);
                                    a cross-validated run's val is its held-out fold
    <run>/dataset.json              the labels, splits and feature index it was trained on (`eri.data.signature`)
    <run>/skipped_videos.csv        videos left out by ``data.bad_files=skip``

An ensemble directory (tools/ensemble.py) holds config.yaml (the ensemble's config), metrics.json,
predictions_<split>.csv, labels.csv (its val is the fit set), dataset.json, members.png and
members.csv, which marks it as an ensemble. `open_run` tells which a folder is; both kinds answer
`predictions`, `labels` and `signature`, so statistics never go back to ``data.root``, which may have
moved since. A directory written before runs kept their labels reads them from its ``data.root``, with
a warning.
"""

from __future__ import annotations

import json
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from eri.constants import EMOTIONS
from eri.data.signature import FILE as SIGNATURE
from eri.data.signature import read_signature
from eri.errors import InputError
from eri.io import atomic_write_text, inside

CONFIG = "config.yaml"
METRICS = "metrics.json"
MODEL = "model.ckpt"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
LABELS = "labels.csv"
MEMBERS = "members.csv"
SKIPPED = "skipped_videos.csv"


def predictions_file(split: str) -> str:
    return f"predictions_{split}.csv"


# ----------------------------------------------------------------------------- files
def read_predictions(folder: Path, split: str) -> pd.DataFrame:
    """A run's (or an ensemble's) ``predictions_<split>.csv``: File_ID -> the 7 intensities."""
    path = Path(folder) / predictions_file(split)
    if not path.is_file():
        raise InputError(f"{folder}: no {path.name}: not a finished run")
    try:
        df = pd.read_csv(path, dtype={"File_ID": str}).set_index("File_ID")
        return df[list(EMOTIONS)].astype(float)
    except (KeyError, ValueError, pd.errors.ParserError) as e:
        raise InputError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def write_predictions(out: Path, split: str, ids: list[str], pred) -> None:
    df = pd.DataFrame(pred, columns=list(EMOTIONS))
    df.insert(0, "File_ID", ids)
    atomic_write_text(Path(out) / predictions_file(split), df.to_csv(index=False, float_format="%.6f"))


def write_labels(out: Path, table: pd.DataFrame) -> None:
    """``labels.csv`` from File_ID, split, the 7 emotions (and ``usable``). Floats are written in full
    (shortest round-trip form) so the labels read back are the very numbers scored with."""
    cols = ["File_ID", "split", *EMOTIONS, *(["usable"] if "usable" in table.columns else [])]
    atomic_write_text(Path(out) / LABELS, table[cols].to_csv(index=False))


def read_labels(path: Path) -> pd.DataFrame:
    """A saved ``labels.csv``, indexed by File_ID; a damaged one is an InputError naming it."""
    try:
        df = pd.read_csv(path, dtype={"File_ID": str, "split": str})  # floats round-trip (tests/test_runs.py)
        df[list(EMOTIONS)] = df[list(EMOTIONS)].astype(np.float64)
        return df.set_index("File_ID")
    except (OSError, KeyError, ValueError, pd.errors.ParserError) as e:
        raise InputError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except FileNotFoundError:
        raise InputError(f"{path.parent}: no {path.name}: not a finished run") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a finished run's ``metrics.json`` names, which must lie inside the run directory."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS
    if not metrics_path.is_file():
        raise InputError(f"{run_dir}: no finished run (metrics.json naming the best checkpoint) found")
    try:
        name = json.loads(metrics_path.read_text())["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{metrics_path} is damaged ({type(e).__name__}: {e})") from None
    best = inside(run_dir, str(name))
    if not best.is_file():
        raise InputError(f"{metrics_path} names the checkpoint {best}, which does not exist")
    return best


def ceiling_of(root: Path, folds: bool = False) -> dict | None:
    """A synthetic dataset's ceilings (the noiseless target against the labels) on val and test; with
    cross-validation folds the val split is not a split of the run, so only test."""
    path = Path(root) / "synthetic.json"
    if not path.is_file():
        return None
    c = json.loads(path.read_text())["ceiling"]
    return {k: c[k] for k in (("test",) if folds else ("val", "test"))}


# ----------------------------------------------------------------------------- the two kinds
class _Scored:
    """What a run and an ensemble directory share: predictions, the labels they were scored on, the
    dataset signature. Each kind says where its data lay (``root``) and reads its labels from there
    when it kept none (``_root_labels``)."""

    kind = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def predictions(self, split: str) -> pd.DataFrame:
        return read_predictions(self.path, split)

    @cached_property
    def metrics(self) -> dict:
        return read_json(self.path / METRICS)

    @cached_property
    def label_table(self) -> pd.DataFrame:
        """File_ID -> split, the 7 emotions (and ``usable``): ``labels.csv``, or for a directory written
        before runs kept their labels, the label file under its ``data.root`` (with a warning)."""
        if (self.path / LABELS).is_file():
            return read_labels(self.path / LABELS)
        root = self.root
        warnings.warn(f"{self.path}: no {LABELS} (written before runs kept their labels): labels read from {root}")
        return self._root_labels().set_index("File_ID")

    def labels(self, ids) -> np.ndarray:
        """(N, 7) labels of ``ids`` as scored, NaN where a video is unlabelled or absent."""
        return self.label_table.reindex(list(ids))[list(EMOTIONS)].to_numpy(np.float64)

    def signature(self) -> dict | None:
        """The saved ``dataset.json`` (None: written before runs recorded it)."""
        return read_signature(self.path / SIGNATURE)


class Run(_Scored):
    """A training run directory (tools/train.py)."""

    kind = "run"

    @cached_property
    def config(self):
        from eri.config import load_config

        if not (self.path / CONFIG).is_file():
            raise InputError(f"{self.path}: no {CONFIG}: not a run directory")
        return load_config(self.path / CONFIG)

    @property
    def root(self) -> str:
        return self.config.data.root

    @property
    def cv(self) -> dict | None:
        """``data.cv`` when the run is one fold of a cross-validation, else None."""
        from omegaconf import OmegaConf

        cv = self.config.data.cv
        return OmegaConf.to_container(cv) if cv.folds else None

    def data(self) -> tuple[str, list[str], str]:
        """``(root, streams, layout)`` of its config: what `dataset_signature` reads."""
        from eri.config import streams_of

        return self.root, streams_of(self.config), self.config.data.layout

    def saved_or_recomputed_signature(self) -> tuple[dict, bool]:
        """``(signature, recomputed)``: ``dataset.json``, or (older runs) one computed now from its data.root."""
        saved = self.signature()
        if saved is not None:
            return saved, False
        from eri.data.signature import dataset_signature

        return dataset_signature(*self.data()), True

    def best_checkpoint(self) -> Path:
        return best_checkpoint(self.path)

    def optimistic(self, split: str) -> str | None:
        """Why its scores on ``split`` are optimistic (it chose something on those videos), or None."""
        if split != "val":
            return None
        cv = self.cv
        return None if cv and cv["select"] == "last" else "its best epoch was chosen on val"

    def _root_labels(self) -> pd.DataFrame:
        from eri.data.folds import split_manifest

        return split_manifest(self.root, self.config.data.layout, self.cv)


class EnsembleRun(_Scored):
    """An ensemble directory (tools/ensemble.py): its metrics.json records the data its members shared."""

    kind = "ensemble"

    @property
    def data(self) -> dict:
        """``{root, layout, synthetic, synthetic_seed, cv}`` its members were trained with."""
        data = self.metrics.get("data")
        if not isinstance(data, dict):
            raise InputError(f"{self.path / METRICS} is damaged (no data section)")
        return data

    @property
    def root(self) -> str:
        return self.data["root"]

    def optimistic(self, split: str) -> str | None:
        return self.metrics["val"].get("optimistic") if split == "val" else None

    def member_runs(self) -> list[Path]:
        """The member run directories its ``members.csv`` names (each must still exist)."""
        from eri.data.labels import read_table

        df = read_table(self.path / MEMBERS, dtype=str)
        if "runs" not in df.columns:
            raise InputError(f"{self.path / MEMBERS} has no runs column")
        runs = [Path(r) for cell in df["runs"].dropna() for r in cell.split()]
        missing = [str(r) for r in runs if not r.is_dir()]
        if missing or not runs:
            raise InputError(f"{self.path / MEMBERS}: member run(s) {missing[:3] or 'none'} not found")
        return runs

    def _root_labels(self) -> pd.DataFrame:
        from eri.data.labels import read_manifest

        return read_manifest(self.root, self.data.get("layout", "auto"))  # looked up by id: splits do not matter


def is_ensemble(path: str | Path) -> bool:
    return (Path(path) / MEMBERS).is_file()


def open_run(path: str | Path) -> Run | EnsembleRun:
    """The run or ensemble directory at ``path``; anything else is a one-line InputError."""
    path = Path(path)
    if is_ensemble(path):
        return EnsembleRun(path)
    if (path / CONFIG).is_file():
        return Run(path)
    why = "does not exist" if not path.exists() else f"has neither {CONFIG} (a run) nor {MEMBERS} (an ensemble)"
    raise InputError(f"{path}: not a run or ensemble directory: it {why}")
