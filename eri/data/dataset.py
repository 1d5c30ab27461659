"""From a dataset root to padded batches: manifest + feature source -> Dataset -> collate.

A batch is ``{"index": (B,), "x": {stream: (B, T_max, D)}, "lengths": {stream: (B,)}, "y": (B, 7)}``;
each stream is padded to its own longest sample, so streams of different lengths in one video
(frames at the video's fps, audio tokens at ~2/s) are normal.

Invalid-video policy (paper 004, section 5.4): frames without a face are dropped; a video with
fewer than ``min_valid_frames`` valid frames in a per-frame stream (or no step at all in another
stream, e.g. a video without audio) is left out of training and, at evaluation, is predicted with
the mean training label, so it still counts in the split's PCC.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from eri.constants import EMOTIONS, SPLITS
from eri.data.labels import read_manifest
from eri.data.store import open_features
from eri.errors import ConfigError, LabelError, StoreError

_SPEC = re.compile(r"^(?P<name>[\w.-]+)(\[(?P<start>\d*):(?P<stop>\d*)\])?$")


def parse_stream(spec: str) -> tuple[str, slice]:
    """``"au"`` -> ("au", all columns); ``"au[0:17]"`` -> ("au", columns 0..16) (intensities only)."""
    m = _SPEC.match(str(spec))
    if not m:
        raise ConfigError(f"bad stream spec '{spec}': expected NAME or NAME[start:stop]")
    start, stop = m["start"], m["stop"]
    return m["name"], slice(int(start) if start else None, int(stop) if stop else None)


@dataclass(frozen=True)
class InputPolicy:
    """How a stored video becomes model input (paper 004, section 5.4), shared by training,
    evaluation and prediction: keep every ``frame_stride``-th step of per-frame streams, drop steps
    without a face, and call a video unusable when a per-frame stream has fewer than
    ``min_valid_frames`` valid frames (counted at the native frame rate) or any stream has no step."""

    drop_invalid_frames: bool = True
    min_valid_frames: int = 50
    frame_stride: int = 1


@dataclass
class VideoInput:
    """One video as the model sees it: per stream spec, the kept steps and their timestamps."""

    x: dict[str, np.ndarray]  # spec -> (T_spec, D_spec) float32
    times: dict[str, np.ndarray]  # spec -> (T_spec,) seconds
    n_valid: dict[str, int]  # stream -> valid steps at the native rate
    problems: list[str]  # why the video is unusable; empty when usable

    @property
    def usable(self) -> bool:
        return not self.problems


def read_video(source, vid: str, specs: list[str], per_frame: dict[str, bool], policy: InputPolicy) -> VideoInput:
    """Apply ``policy`` to one video of a feature source (a `FeatureStore` or `MuseFeatureDir`).
    ``per_frame``: stream name -> whether it has one step per video frame. Raises StoreError for a
    damaged or missing file."""
    x, times, n_valid, problems = {}, {}, {}, []
    for spec in specs:
        name, cols = parse_stream(spec)
        feats, valid, t = source.load(name, vid, with_times=True)
        n_valid[name] = int(valid.sum())
        frame = per_frame[name]
        if frame and n_valid[name] < policy.min_valid_frames:
            problems.append(f"{name}: {n_valid[name]} valid frames < {policy.min_valid_frames}")
        if frame and policy.frame_stride > 1:
            feats, valid, t = feats[:: policy.frame_stride], valid[:: policy.frame_stride], t[:: policy.frame_stride]
        if policy.drop_invalid_frames:
            feats, t = feats[valid], t[valid]
        if len(feats) == 0 or (not frame and n_valid[name] == 0):
            problems.append(f"{name}: no steps")
        x[spec], times[spec] = np.ascontiguousarray(feats[:, cols]), t
    return VideoInput(x, times, n_valid, list(dict.fromkeys(problems)))


def spec_dim(spec: str, meta: dict) -> int:
    """Columns a stream spec selects from a stream of ``meta["dim"]`` columns."""
    _, cols = parse_stream(spec)
    return len(range(int(meta["dim"]))[cols])


@dataclass
class SplitInfo:
    """Everything about one split the task needs to score it as a whole."""

    ids: list[str]  # every video of the split, in manifest order
    labels: np.ndarray  # (N, 7), NaN where unlabeled
    usable: np.ndarray  # (N,) bool: passes the invalid-video policy

    @property
    def labeled(self) -> bool:
        return len(self.ids) > 0 and not np.isnan(self.labels).any()

    def not_scored(self) -> str | None:
        """Why this split's PCC cannot be computed, or None."""
        if len(self.ids) < 2:
            return f"{len(self.ids)} video(s); a PCC needs at least 2"
        unlabeled = int(np.isnan(self.labels).any(axis=1).sum())
        if unlabeled:
            return f"{unlabeled} of {len(self.ids)} videos have no labels"
        return None


class VideoFeatures(Dataset):
    """The usable videos of one split; item ``i`` is one video, all requested streams."""

    def __init__(self, arrays: dict[str, list[np.ndarray]], labels: np.ndarray, positions: np.ndarray):
        self.arrays, self.labels, self.positions = arrays, labels, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        return {
            "index": int(self.positions[i]),
            "x": {s: torch.from_numpy(a[i]) for s, a in self.arrays.items()},
            "y": torch.from_numpy(self.labels[i]),
        }


class EpochShuffle(Sampler[int]):
    """A shuffle drawn from ``seed + epoch``: the order of epoch k is the same whether the run went
    straight through or resumed from a checkpoint (Lightning calls ``set_epoch``; under DDP it
    swaps in its DistributedSampler, which seeds the same way)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng(self.seed + self.epoch).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def collate(items: list[dict]) -> dict:
    """Pad each stream to its longest member; keep the true lengths (float16 store -> float32)."""
    streams = items[0]["x"].keys()
    return {
        "index": torch.tensor([it["index"] for it in items]),
        "x": {s: pad_sequence([it["x"][s] for it in items], batch_first=True).float() for s in streams},
        "lengths": {s: torch.tensor([len(it["x"][s]) for it in items]) for s in streams},
        "y": torch.stack([it["y"] for it in items]).float(),
    }


class ERIDataModule(L.LightningDataModule):
    """Reads a dataset root (ABAW5 or MuSe 2022 layout) and serves the streams a model asks for.

    ``bad_files``: a damaged or misshapen feature file is an error naming it (``error``), or its
    video is left out of training and predicted with the train-label mean like an invalid video
    (``skip``; listed in ``self.skipped``). Either way it is found while loading, before training.
    """

    def __init__(
        self,
        root: str | Path,
        streams: list[str],
        layout: str = "auto",
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        drop_invalid_frames: bool = True,
        min_valid_frames: int = 50,
        frame_stride: int = 1,
        seed: int = 0,
        progress: bool = True,
        bad_files: str = "error",
        synthetic: str | None = None,
        synthetic_seed: int = 0,
    ):
        super().__init__()
        self.root, self.layout, self.streams = Path(root), layout, list(dict.fromkeys(streams))
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed, self.progress = num_workers, seed, progress
        if frame_stride < 1:
            raise ConfigError(f"frame_stride must be >= 1, got {frame_stride}")
        if bad_files not in ("error", "skip"):
            raise ConfigError(f"bad_files must be error or skip, got {bad_files!r}")
        self.policy = InputPolicy(drop_invalid_frames, min_valid_frames, frame_stride)
        self.bad_files = bad_files
        self.synthetic, self.synthetic_seed = synthetic, synthetic_seed
        self.splits: dict[str, SplitInfo] = {}
        self.datasets: dict[str, VideoFeatures] = {}
        self.train_mean: np.ndarray | None = None
        self.stream_dims: dict[str, int] = {}
        self.skipped: list[dict] = []  # {File_ID, split, problem} for each video left out by bad_files=skip
        self.metas: dict[str, dict] = {}  # stream name -> its store metadata (meta.json)

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        """Generate the synthetic preset on first use (Lightning calls this once per machine)."""
        if self.synthetic:
            from eri.data.synthetic import ensure_synthetic

            ensure_synthetic(self.root, self.synthetic, seed=self.synthetic_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if not self.root.is_dir():
            raise ConfigError(f"data.root: dataset root {self.root} does not exist (set data.root, or data.synthetic=<preset>)")
        manifest = read_manifest(self.root, self.layout)
        source = open_features(self.root)
        names = list(dict.fromkeys(parse_stream(spec)[0] for spec in self.streams))
        metas = self.metas = {name: source.meta(name) for name in names}
        per_frame = {name: metas[name].get("rate") == "frame" for name in names}
        self.stream_dims = {spec: spec_dim(spec, metas[parse_stream(spec)[0]]) for spec in self.streams}
        self._check_coverage(manifest, source, names)
        train = manifest[manifest["split"] == "train"]
        unlabeled = train["File_ID"][train[list(EMOTIONS)].isna().any(axis=1)]
        if len(unlabeled):
            raise LabelError(
                f"{self.root}: {len(unlabeled)} training video(s) have no labels (e.g. {list(unlabeled[:5])}); "
                "training needs every train row labeled"
            )

        for split in SPLITS:
            rows = manifest[manifest["split"] == split]
            ids = rows["File_ID"].tolist()
            arrays: dict[str, list[np.ndarray]] = {spec: [] for spec in self.streams}
            usable = np.zeros(len(ids), bool)
            it = tqdm(ids, desc=f"loading {split} features", disable=not self.progress or not ids, leave=False)
            for k, vid in enumerate(it):
                try:
                    video = read_video(source, vid, self.streams, per_frame, self.policy)
                except StoreError as e:
                    if self.bad_files == "error":
                        raise StoreError(f"{e} (data.bad_files=skip leaves such videos out and reports them)") from None
                    self.skipped.append({"File_ID": vid, "split": split, "problem": str(e)})
                    continue
                if video.usable:
                    usable[k] = True
                    for spec in self.streams:
                        arrays[spec].append(video.x[spec])
            labels = rows[list(EMOTIONS)].to_numpy(np.float32)
            self.splits[split] = SplitInfo(ids, labels, usable)
            keep = np.flatnonzero(usable)
            self.datasets[split] = VideoFeatures(arrays, labels[keep], keep)
        if self.skipped:
            warnings.warn(
                f"{self.root}: {len(self.skipped)} video(s) left out because of damaged feature files "
                f"(data.bad_files=skip), e.g. {self.skipped[0]['problem']}"
            )

        train_info = self.splits["train"]
        if not train_info.usable.any():
            raise StoreError(f"{self.root}: no usable training video (all have < {self.policy.min_valid_frames} valid frames)")
        self.train_mean = train_info.labels[train_info.usable].mean(axis=0)
        if stage in (None, "fit"):
            why = self.splits["val"].not_scored()
            if why:
                raise LabelError(
                    f"{self.root}: the val split cannot be scored ({why}); the best epoch is chosen by val mean PCC, "
                    "so val needs at least 2 videos, all labelled"
                )

    def stream_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-stream mean and std of every step of the usable training videos (float64 sums
        per video, so the full set never sits in memory as float32). Constant columns get std 1."""
        stats = {}
        for spec, arrays in self.datasets["train"].arrays.items():
            total = sum(a.shape[0] for a in arrays)
            s1 = sum(a.sum(0, dtype=np.float64) for a in arrays)
            s2 = sum(np.square(a, dtype=np.float64).sum(0) for a in arrays)
            mean = s1 / total
            std = np.sqrt(np.maximum(s2 / total - mean**2, 0.0))
            stats[spec] = (mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32))
        return stats

    def _check_coverage(self, manifest: pd.DataFrame, source, names: list[str]) -> None:
        for name in names:
            have = set(source.index(name)["File_ID"].astype(str))
            missing = sorted(set(manifest["File_ID"]) - have)
            if missing:
                raise StoreError(
                    f"{self.root}: {len(missing)} video(s) in the label file have no '{name}' features "
                    f"(e.g. {missing[:5]}); extract them or remove the rows"
                )

    # ------------------------------------------------------------ dataloaders
    def _loader(self, split: str, train: bool) -> DataLoader:
        data = self.datasets[split]
        return DataLoader(
            data,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochShuffle(len(data), self.seed) if train else None,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_loader(self, split: str) -> DataLoader:
        return self._loader(split, False)
