"""The data side of the end-to-end model (issue 21 item 3): branches whose encoder reads face crops
(``takes_crops``, `eri.models.e2e`) get their frames lazily, one video at a time (`read_crops`: only the
frames a step uses), never every video's crops in memory.

Per video the input rule is `select_steps` (drop frames without a face, frame stride, the valid-frame
minimum), then at most ``max_len`` frames, picked uniformly as `fit_to_length` picks them, so the data
reads exactly the frames the masked RNN keeps (training and scoring alike; the per-step random subset of
frames that gets gradients is the encoder's). Pixels are not standardised (`check_crop_config`). A model
that reads crops reads only crop streams (an e2e branch beside a feature branch is refused).

Synthetic data: with ``data.synthetic`` a ``*-faces`` preset (`eri.data.synthetic.faces`) is generated and
its crops extracted once before training (`eri.features.crops.extract_face_crops`, called by
`eri.training.run.prepared_datamodule`: the data package never runs extraction), so the acceptance
command runs in one step. Real data: extract first with ``tools/extract.py --config configs/extract/crops.yaml``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from eri.constants import EMOTIONS, SPLITS
from eri.data.dataset import SplitInfo, VideoInput, parse_stream, select_steps, spec_dim
from eri.errors import ConfigError, LabelError, StoreError

def crop_streams(branches, standardize: bool = False) -> dict[str, int]:
    """``{stream spec: max_len}`` of the streams read by crop-taking encoders (`eri.models.e2e.takes_crops`);
    ``standardize`` (data.standardize) with a crop branch is a ConfigError."""
    from eri.models.e2e import check_crop_config, takes_crops

    check_crop_config(branches, standardize)
    out = {}
    for b in branches:
        enc = dict(b["encoder"])
        if takes_crops(enc):
            out.update({s: int(enc.get("max_len", 480)) for s in b["streams"]})
    return out


def frames_to_read(valid: np.ndarray, name: str, per_frame: bool, policy, max_len: int):
    """Stored frame indices a model reads (the input rule, then `fit_to_length`'s uniform pick), problems."""
    keep, problems = select_steps(valid, name, per_frame, policy)
    if len(keep) > max_len:
        keep = keep[(np.arange(max_len) * len(keep)) // max_len]
    return keep, problems


def read_crop_video(store, vid: str, crops: dict[str, int], per_frame: dict, policy) -> VideoInput:
    """One video's crop streams as a model sees them (uint8 (n, S*S*3) per spec), like `read_video`."""
    from eri.data.crops import crop_valid, read_crops

    x, times, n_valid, problems = {}, {}, {}, []
    for spec, max_len in crops.items():
        name, _ = parse_stream(spec)
        valid, _ = crop_valid(store, name, vid)
        n_valid[name] = int(valid.sum())
        keep, why = frames_to_read(valid, name, per_frame[name], policy, max_len)
        problems += why
        frames, _, t = read_crops(store, name, vid, keep) if not why else (np.zeros((0, 1, 1, 3), np.uint8), None, keep * 0.0)
        x[spec], times[spec] = frames.reshape(len(frames), -1), t
    return VideoInput(x, times, n_valid, list(dict.fromkeys(problems)))


class CropVideos(Dataset):
    """The usable videos of one split; item ``i`` reads its frames from the store when asked."""

    def __init__(self, store, crops, ids, labels, positions, frames: list[dict[str, np.ndarray]]):
        self.store, self.crops, self.ids, self.labels, self.positions = store, crops, ids, labels, positions
        self.frames = frames  # per video: spec -> stored frame indices to read
        self.lengths = np.asarray([max(len(f) for f in fr.values()) for fr in frames], np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        from eri.data.crops import read_crops

        x = {}
        for spec, idx in self.frames[i].items():
            frames = read_crops(self.store, parse_stream(spec)[0], self.ids[i], idx)[0]
            x[spec] = torch.from_numpy(frames.reshape(len(frames), -1))  # uint8; collate pads, then floats
        return {"index": int(self.positions[i]), "x": x, "y": torch.from_numpy(self.labels[i])}


def setup_crops(dm, stage: str | None) -> None:
    """`ERIDataModule.setup` for a model whose branches read crops: the same checks and splits, datasets
    that read frames lazily, no statistics pass."""
    from eri.data.folds import split_manifest
    from eri.data.labels import train_mean
    from eri.data.store import FeatureStore, open_features

    others = [s for s in dm.streams if s not in dm.crops]
    if others:
        raise ConfigError(f"streams {others} feed ordinary branches beside a face-crop branch (encoder mma_rnn): "
                          "a model reading crops reads only crop streams")
    if not dm.root.is_dir():
        raise ConfigError(f"data.root: dataset root {dm.root} does not exist: point data.root at your data")
    manifest = dm.manifest = split_manifest(dm.root, dm.layout, dm.cv)
    source = open_features(dm.root)
    if not isinstance(source, FeatureStore):
        raise ConfigError(f"{dm.root}: face crops live in a feature store ({dm.root}/features): extract them with "
                          "tools/extract.py --config configs/extract/crops.yaml")
    dm.metas = {name: source.meta(name) for name in dm.names}
    dm.per_frame = {name: m.get("rate") == "frame" for name, m in dm.metas.items()}
    dm.stream_dims = {spec: spec_dim(spec, dm.metas[parse_stream(spec)[0]], crops=True) for spec in dm.streams}
    dm._check_coverage(manifest, source, dm.names)
    train = manifest[manifest["split"] == "train"]
    if train[list(EMOTIONS)].isna().any(axis=None):
        raise LabelError(f"{dm.root}: training video(s) have no labels; training needs every train row labeled")
    if stage in (None, "fit"):
        dm._check_val_labels(manifest[manifest["split"] == "val"])
    for split in SPLITS:
        rows = manifest[manifest["split"] == split]
        ids, labels = rows["File_ID"].tolist(), rows[list(EMOTIONS)].to_numpy(np.float32)
        usable, frames = np.zeros(len(ids), bool), []
        for k, vid in enumerate(ids):
            try:
                video = read_crop_plan(source, vid, dm.crops, dm.per_frame, dm.policy)
            except StoreError as e:
                dm._bad(vid, split, e)
                continue
            if video is not None:
                usable[k] = True
                frames.append(video)
        dm.splits[split] = SplitInfo(ids, labels, usable)
        keep = np.flatnonzero(usable)
        dm.datasets[split] = CropVideos(source, dm.crops, [ids[k] for k in keep], labels[keep], keep, frames)
    if not dm.splits["train"].usable.any():
        raise StoreError(f"{dm.root}: no usable training video (all have < {dm.policy.min_valid_frames} valid frames)")
    dm.train_mean = train_mean(manifest, dm.splits["train"].usable)
    if stage in (None, "fit"):
        why = dm.splits["val"].not_scored()
        if why:
            raise LabelError(f"{dm.root}: the val split cannot be scored ({why})")
    dm._warn_small()


def read_crop_plan(store, vid, crops, per_frame, policy) -> dict[str, np.ndarray] | None:
    """The stored frames to read per spec, or None when the video is unusable (no image decoded)."""
    from eri.data.crops import crop_valid

    plan = {}
    for spec, max_len in crops.items():
        name, _ = parse_stream(spec)
        keep, why = frames_to_read(crop_valid(store, name, vid)[0], name, per_frame[name], policy, max_len)
        if why:
            return None
        plan[spec] = keep
    return plan
