"""From a dataset root to batches: manifest (+ cross-validation folds) and feature source -> one
Dataset per split -> the training collate (`eri.data.dataset`).

``cache``: ``memory`` loads every usable video's model input once (fast for `hume-small`); ``memmap``
reads it from the store's packed copy (`eri.data.packed`) at each step, so a rank's memory does not
grow with the dataset (Hume-Reaction's 25k videos) and ranks on one machine share the page cache.
Both apply the same rule (`read_video`) and give identical batches (tested).

``bucket``: length-bucketed batching. Each epoch's seeded shuffle is cut into windows of 50
batches, each window sorted by length and cut into batches, and the batches shuffled: batches
hold videos of similar length (less padding), the order depends only on the seed and the epoch
(exact resume holds), and every video is still seen once per epoch.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from eri.constants import EMOTIONS, SPLITS
from eri.data.dataset import InputPolicy, SplitInfo, collate, parse_stream, read_video, select_steps, spec_dim
from eri.data.folds import split_manifest
from eri.data.labels import train_mean
from eri.data.store import FeatureStore, open_features, unlearned
from eri.errors import ConfigError, LabelError, StoreError
from eri.io import stable_hash

BUCKET_WINDOW = 50  # batches per sorted window
MIN_SCORED_VIDEOS = 20  # a split scored on fewer videos gets a warning: its PCC is mostly noise


class VideoFeatures(Dataset):
    """The usable videos of one split; item ``i`` is one video, all requested streams. Holds the model
    input (``arrays``, cache=memory) or reads it on demand (``reader(i)``, cache=memmap)."""

    def __init__(self, labels: np.ndarray, positions: np.ndarray, lengths: np.ndarray,
                 arrays: dict[str, list[np.ndarray]] | None = None, reader=None):
        self.labels, self.positions, self.lengths = labels, positions, lengths
        self.arrays, self.reader = arrays, reader

    def __len__(self) -> int:
        return len(self.positions)

    def x(self, i: int) -> dict[str, np.ndarray]:
        return {s: a[i] for s, a in self.arrays.items()} if self.arrays is not None else self.reader(i)

    def __getitem__(self, i: int) -> dict:
        return {
            "index": int(self.positions[i]),
            "x": {s: torch.from_numpy(a) for s, a in self.x(i).items()},
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

    def order(self) -> np.ndarray:
        return np.random.default_rng(self.seed + self.epoch).permutation(self.n)

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.n


class BucketShuffle(EpochShuffle):
    """`EpochShuffle` with videos of similar length next to each other, in whole batches (module docstring)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int):
        super().__init__(len(lengths), seed)
        self.lengths, self.batch_size = np.asarray(lengths), batch_size

    def order(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed + self.epoch)
        perm = rng.permutation(self.n)
        window = self.batch_size * BUCKET_WINDOW
        batches = []
        for start in range(0, self.n, window):
            chunk = perm[start : start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        rest = [b for b in batches if len(b) < self.batch_size]  # the one short batch goes last, alone
        return np.concatenate([full[i] for i in rng.permutation(len(full))] + rest) if batches else perm


def padding_fraction(lengths: np.ndarray, order: np.ndarray, batch_size: int) -> float:
    """Padded steps over all steps of the batches ``order`` makes (the longest video sets each batch)."""
    pad = total = 0
    for i in range(0, len(order), batch_size):
        b = lengths[order[i : i + batch_size]]
        pad, total = pad + int(b.max() * len(b) - b.sum()), total + int(b.max() * len(b))
    return pad / max(total, 1)


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
        cv: dict | None = None,
        cache: str = "memory",
        bucket: bool = False,
        crops: dict | None = None,
    ):
        super().__init__()
        self.root, self.layout, self.streams = Path(root), layout, list(dict.fromkeys(streams))
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed, self.progress = num_workers, seed, progress
        if frame_stride < 1:
            raise ConfigError(f"frame_stride must be >= 1, got {frame_stride}")
        if bad_files not in ("error", "skip") or cache not in ("memory", "memmap"):
            raise ConfigError(f"bad_files must be error or skip, cache memory or memmap; got {bad_files!r}, {cache!r}")
        self.policy = InputPolicy(drop_invalid_frames, min_valid_frames, frame_stride)
        self.bad_files, self.cache, self.bucket = bad_files, cache, bucket
        self.synthetic, self.synthetic_seed = synthetic, synthetic_seed
        self.cv = dict(cv) if cv and cv.get("folds") else None  # eri.data.folds.apply_cv arguments
        self.names = list(dict.fromkeys(parse_stream(spec)[0] for spec in self.streams))
        self.splits: dict[str, SplitInfo] = {}
        self.datasets: dict[str, VideoFeatures] = {}
        self.train_mean: np.ndarray | None = None
        self.manifest: pd.DataFrame | None = None  # the labels and splits of this run (folds applied)
        self.stream_dims: dict[str, int] = {}
        self.skipped: list[dict] = []  # {File_ID, split, problem} for each video left out by bad_files=skip
        self.metas: dict[str, dict] = {}  # stream name -> its store metadata (meta.json)
        self._stats = None
        self._flags: dict[str, tuple[bool, bool]] = {}  # spec -> (constant, same in every training video)
        self.crops = dict(crops or {})  # spec -> max_len of crop-taking encoders (eri.data.crops_dataset)

    @classmethod
    def from_config(cls, cfg, progress: bool = True) -> "ERIDataModule":
        """The data module of a run config: every ``data.*`` key the constructor takes (`eri.config.DataConfig`),
        the streams its branches read, and its seed."""
        from omegaconf import OmegaConf

        from eri.config import streams_of
        from eri.data.crops_dataset import crop_streams
        takes = set(inspect.signature(cls.__init__).parameters) - {"crops"}
        data = OmegaConf.to_container(cfg.data, resolve=True)
        branches = OmegaConf.to_container(cfg.model.branches, resolve=True)
        return cls(**{k: v for k, v in data.items() if k in takes}, streams=streams_of(cfg), seed=cfg.seed, progress=progress,
                   crops=crop_streams(branches, bool(cfg.data.standardize)))

    def label_table(self) -> pd.DataFrame:
        """The labels it scores with, as a run keeps them (`eri.runs.LABELS`): File_ID, split, the 7
        emotions as read, and ``usable`` (1: the model reads the video; 0: the train-label mean stands in)."""
        parts = [self.manifest[self.manifest["split"] == s].assign(usable=self.splits[s].usable.astype(int)) for s in SPLITS]
        return pd.concat(parts, ignore_index=True)[["File_ID", "split", *EMOTIONS, "usable"]]

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        """Generate the synthetic preset on first use and build packed copies for ``cache=memmap``
        (Lightning calls this once per machine). Synthetic data is opt-in (``data.synthetic``) and is
        written only into a new or empty ``data.root`` (or one it started): never over a user's data."""
        if self.synthetic:
            from eri.data.synthetic import ensure_synthetic
            from eri.data.synthetic.knobs import FACE_KNOBS

            if not (self.crops and self.synthetic in FACE_KNOBS):  # those: eri.features.crops.extract_face_crops
                ensure_synthetic(self.root, self.synthetic, seed=self.synthetic_seed)
        if self.cache == "memmap" and self.root.is_dir():
            from eri.data.packed import ensure_packed

            for name in self.names:
                ensure_packed(self._store(), name, self.progress)

    def _store(self) -> FeatureStore:
        source = open_features(self.root)
        if not isinstance(source, FeatureStore):
            raise ConfigError(f"data.cache=memmap needs a feature store ({self.root}/features), not organiser CSVs")
        return source

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.crops:  # branches reading face crops: frames read lazily (eri.data.crops_dataset)
            from eri.data.crops_dataset import setup_crops
            return setup_crops(self, stage)
        if not self.root.is_dir():
            raise ConfigError(f"data.root: dataset root {self.root} does not exist: point data.root at your data "
                              "(README, \"Your data\"), or run configs/demo.yaml for the synthetic demo")
        manifest = self.manifest = split_manifest(self.root, self.layout, self.cv)
        source = open_features(self.root)
        self.metas = {name: source.meta(name) for name in self.names}
        self.per_frame = {name: m.get("rate") == "frame" for name, m in self.metas.items()}
        self.stream_dims = {spec: spec_dim(spec, self.metas[parse_stream(spec)[0]]) for spec in self.streams}
        self._check_coverage(manifest, source, self.names)
        if isinstance(source, FeatureStore):
            for name in self.names:
                source.check_rate(name, manifest["File_ID"])
        train = manifest[manifest["split"] == "train"]
        unlabeled = train["File_ID"][train[list(EMOTIONS)].isna().any(axis=1)]
        if len(unlabeled):
            raise LabelError(
                f"{self.root}: {len(unlabeled)} training video(s) have no labels (e.g. {list(unlabeled[:5])}); "
                "training needs every train row labeled"
            )
        if stage in (None, "fit"):
            self._check_val_labels(manifest[manifest["split"] == "val"])
        for name, meta in self.metas.items():
            why = unlearned(name, meta)
            if why:
                warnings.warn(why)
        if self.cache == "memmap":
            from eri.data.packed import PackedStore

            self.source = PackedStore(self._store(), self.names)
        for split in SPLITS:
            rows = manifest[manifest["split"] == split]
            ids = rows["File_ID"].tolist()
            labels = rows[list(EMOTIONS)].to_numpy(np.float32)
            if self.cache == "memmap":
                usable, data = self._judge_packed(split, ids), None
                lengths = self._packed_lengths(ids, usable)
            else:
                usable, lengths, data = self._load(split, ids, source)
            self.splits[split] = SplitInfo(ids, labels, usable)
            keep = np.flatnonzero(usable)
            reader = None if data is not None else (lambda i, ids=[ids[k] for k in keep]: self._read(ids[i]))
            self.datasets[split] = VideoFeatures(labels[keep], keep, lengths, data, reader)
        if self.skipped:
            warnings.warn(
                f"{self.root}: {len(self.skipped)} video(s) left out because of damaged feature files "
                f"(data.bad_files=skip), e.g. {self.skipped[0]['problem']}"
            )
        train_info = self.splits["train"]
        if not train_info.usable.any():
            raise StoreError(f"{self.root}: no usable training video (all have < {self.policy.min_valid_frames} valid frames)")
        self.train_mean = train_mean(manifest, train_info.usable)
        if stage in (None, "fit"):
            why = self.splits["val"].not_scored()
            if why:
                raise LabelError(
                    f"{self.root}: the val split cannot be scored ({why}); the best epoch is chosen by val mean PCC, "
                    "so val needs at least 2 videos, all labelled"
                )
            self._warn_uninformative()
        self._warn_small()

    def _selects_on_val(self) -> bool:
        """Whether val chooses the best epoch (everything but cross-validation with select=last)."""
        return not (self.cv and self.cv.get("select", "last") == "last")

    def _check_val_labels(self, val: pd.DataFrame) -> None:
        """Val labels constant in every emotion leave nothing to choose the best epoch by (every epoch
        scores 0): refused before training. Where val chooses nothing (cross-validation, select=last:
        the last epoch is kept) it is a warning, as are some constant emotions (they score 0 throughout)."""
        y = val[list(EMOTIONS)].to_numpy(np.float64)
        if len(y) < 2 or np.isnan(y).any():
            return  # not_scored() says why
        constant = [e for e, col in zip(EMOTIONS, y.T) if np.ptp(col) == 0]
        if len(constant) == len(EMOTIONS):
            why = (f"{self.root}: every val label column is constant (one value per emotion across the {len(y)} val "
                   "videos): Pearson r is undefined, so val cannot be scored")
            if self._selects_on_val():
                raise LabelError(f"{why} or choose the best epoch; give val videos whose labels vary")
            warnings.warn(f"{why}; the last epoch is kept (data.cv.select=last)")
        elif constant:
            warnings.warn(f"{self.root}: val labels are constant for {constant}: those emotions score 0 on val and "
                          "take no part in choosing the best epoch")

    def _warn_small(self) -> None:
        for split in ("val", "test"):
            info = self.splits[split]
            if info.labeled and 2 <= len(info.ids) < MIN_SCORED_VIDEOS:
                warnings.warn(f"{self.root}: the {split} split has {len(info.ids)} videos: its PCC and 95% interval are "
                              f"meaningless at that size (use at least {MIN_SCORED_VIDEOS})")

    def _warn_uninformative(self) -> None:
        """Streams that cannot tell training videos apart: constant in every column, or the same values
        (per-video mean and spread) in every video. Costs nothing extra when ``data.standardize`` (the
        statistics pass is shared); otherwise one pass over the training set."""
        self.stream_stats()
        for spec, (constant, same) in self._flags.items():
            if constant:
                warnings.warn(f"stream '{spec}' is constant: every column has one value in every training step, so it "
                              "carries no information (check its extraction)")
            elif same:
                warnings.warn(f"stream '{spec}' has the same values in every training video (per-video mean and spread "
                              "identical in every column): it cannot tell videos apart (check its extraction)")

    def _bad(self, vid: str, split: str, e: StoreError) -> None:
        if self.bad_files == "error":
            raise StoreError(f"{e} (data.bad_files=skip leaves such videos out and reports them)") from None
        self.skipped.append({"File_ID": vid, "split": split, "problem": str(e)})

    def _load(self, split: str, ids: list[str], source):
        """cache=memory: every usable video's model input, read once."""
        arrays: dict[str, list[np.ndarray]] = {spec: [] for spec in self.streams}
        usable, lengths = np.zeros(len(ids), bool), []
        for k, vid in enumerate(tqdm(ids, desc=f"loading {split} features", disable=not self.progress or not ids, leave=False)):
            try:
                video = read_video(source, vid, self.streams, self.per_frame, self.policy)
            except StoreError as e:
                self._bad(vid, split, e)
                continue
            if video.usable:
                usable[k] = True
                lengths.append(max(len(a) for a in video.x.values()))
                for spec in self.streams:
                    arrays[spec].append(video.x[spec])
        return usable, np.asarray(lengths, np.int64), arrays

    def _judge_packed(self, split: str, ids: list[str]) -> np.ndarray:
        """cache=memmap: the input rule on the packed validity flags alone (no feature is read)."""
        usable = np.zeros(len(ids), bool)
        for k, vid in enumerate(ids):
            ok = True
            for name in self.names:
                try:
                    valid = self.source.valid_steps(name, vid)
                except StoreError as e:  # a damaged file, packed empty (data.bad_files decides)
                    self._bad(vid, split, e)
                    ok = False
                    break
                ok = ok and not select_steps(valid, name, self.per_frame[name], self.policy)[1]
            usable[k] = ok
        return usable

    def _packed_lengths(self, ids: list[str], usable: np.ndarray) -> np.ndarray:
        return np.asarray([max(len(select_steps(self.source.valid_steps(name, ids[k]), name, self.per_frame[name],
                                                self.policy)[0]) for name in self.names)
                           for k in np.flatnonzero(usable)], np.int64)

    def _read(self, vid: str) -> dict[str, np.ndarray]:
        return read_video(self.source, vid, self.streams, self.per_frame, self.policy).x

    def stream_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-stream mean and std of every step of the usable training videos (float64 sums per
        video, in video order). Constant columns get std 1. With cache=memmap the pass over the
        training set is done once and kept beside the packed copies, keyed by everything it depends on."""
        if self._stats is not None:
            return self._stats
        data = self.datasets["train"]
        path = None
        if self.cache == "memmap":
            key = stable_hash({"fingerprints": {n: self.source.streams[n].fingerprint for n in self.names},
                               "specs": self.streams, "policy": self.policy.__dict__,
                               "ids": [self.splits["train"].ids[k] for k in data.positions]}, "sha1")
            path = self.root / "features" / "packed_stats" / f"{key}.npz"
            if path.is_file():
                with np.load(path) as z:
                    if all(f"{s}|flags" in z.files for s in self.streams):  # older caches lack them: recomputed
                        self._stats = {s: (z[f"{s}|mean"], z[f"{s}|std"]) for s in self.streams}
                        self._flags = {s: tuple(bool(b) for b in z[f"{s}|flags"]) for s in self.streams}
                        return self._stats
        sums = {s: [0.0, 0.0, 0] for s in self.streams}
        per_video = {s: [] for s in self.streams}  # (mean, std) of each video: do videos differ at all?
        for i in range(len(data)):
            for s, a in data.x(i).items():
                sums[s][0] = sums[s][0] + a.sum(0, dtype=np.float64)
                sums[s][1] = sums[s][1] + np.square(a, dtype=np.float64).sum(0)
                sums[s][2] += a.shape[0]
                if len(a):
                    per_video[s].append(np.concatenate([a.mean(0, dtype=np.float64), a.std(0, dtype=np.float64)]))
        stats, self._flags = {}, {}
        for s, (s1, s2, total) in sums.items():
            mean = s1 / total
            std = np.sqrt(np.maximum(s2 / total - mean**2, 0.0))
            stats[s] = (mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32))
            videos = np.asarray(per_video[s])
            same = len(videos) > 1 and bool((np.ptp(videos, axis=0) <= 1e-6 * (1 + np.abs(videos).max(0))).all())
            self._flags[s] = (bool((std <= 1e-6).all()), same)
        if path is not None:
            from eri.io import atomic_write_bytes

            arrays = {f"{s}|{k}": v for s, (m, sd) in stats.items() for k, v in (("mean", m), ("std", sd))}
            arrays.update({f"{s}|flags": np.asarray(f) for s, f in self._flags.items()})
            try:
                atomic_write_bytes(path, lambda f: np.savez(f, **arrays))
            except OSError:
                pass  # a cache only: another user's store may not be writable
        self._stats = stats
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
        sampler = None
        if train:
            sampler = BucketShuffle(data.lengths, self.batch_size, self.seed) if self.bucket else EpochShuffle(len(data), self.seed)
        return DataLoader(
            data,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
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
