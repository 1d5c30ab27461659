"""The input rule, in one place: how a stored video becomes model input (`InputPolicy`,
`select_steps`, `read_video`) and how videos become a padded batch (`collate`). Training
(`eri.data.datamodule`), evaluation and prediction (`eri.inference`) all call these.

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
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from eri.errors import ConfigError
from eri.streams import StreamMeta

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

    @classmethod
    def of(cls, data) -> "InputPolicy":
        """The policy of a config's ``data`` group."""
        return cls(bool(data.drop_invalid_frames), int(data.min_valid_frames), int(data.frame_stride))


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


def select_steps(valid: np.ndarray, name: str, per_frame: bool, policy: InputPolicy) -> tuple[np.ndarray, list[str]]:
    """The rule, in one place: which of a stream's stored steps reach the model (indices), and why the
    video is unusable (empty when it is usable). Needs only the ``valid`` flags, so a packed store can
    judge every video without reading its features."""
    n_valid, problems = int(valid.sum()), []
    if per_frame and n_valid < policy.min_valid_frames:
        problems.append(f"{name}: {n_valid} valid frames < {policy.min_valid_frames}")
    keep = np.arange(len(valid))
    if per_frame and policy.frame_stride > 1:
        keep = keep[:: policy.frame_stride]
    if policy.drop_invalid_frames:
        keep = keep[valid[keep]]
    if len(keep) == 0 or (not per_frame and n_valid == 0):
        problems.append(f"{name}: no steps")
    return keep, problems


def read_video(source, vid: str, specs: list[str], per_frame: dict[str, bool], policy: InputPolicy) -> VideoInput:
    """Apply ``policy`` to one video of a feature source (a `FeatureStore`, `MuseFeatureDir` or
    `PackedStore`). ``per_frame``: stream name -> whether it has one step per video frame. Raises
    StoreError for a damaged or missing file."""
    x, times, n_valid, problems = {}, {}, {}, []
    for spec in specs:
        name, cols = parse_stream(spec)
        feats, valid, t = source.load(name, vid, with_times=True)
        n_valid[name] = int(valid.sum())
        keep, why = select_steps(valid, name, per_frame[name], policy)
        problems += why
        x[spec], times[spec] = np.ascontiguousarray(feats[keep][:, cols]), t[keep]
    return VideoInput(x, times, n_valid, list(dict.fromkeys(problems)))


def spec_dim(spec: str, meta: StreamMeta | dict, crops: bool = False) -> int:
    """Columns a stream spec selects from a stream of ``meta``'s width (a descriptor or its meta.json
    object); a slice that reaches past the width or selects nothing is a ConfigError (Python would
    silently clip it, or build a 0-wide encoder). ``crops``: the spec feeds an encoder that takes face crops
    (`eri.data.crops_dataset`): it must be a whole crop stream."""
    name, cols = parse_stream(spec)
    d = meta.to_dict() if isinstance(meta, StreamMeta) else meta
    is_crops = d.get("dtype") == "uint8" or d.get("extractor") == "crops"
    if crops and (not is_crops or cols != slice(None)):  # the end-to-end model's input: whole images
        raise ConfigError(f"stream spec '{spec}' feeds an encoder that takes face crops: name a whole face-crop "
                          "stream (extracted with configs/extract/crops.yaml)")
    if is_crops and not crops:  # pixels: z-scoring them as features is meaningless
        raise ConfigError(f"stream '{name}' holds face-crop images, not features: crops feed the end-to-end model "
                          "(issue 21 item 3), not an ordinary branch")
    dim = int(meta.dim if isinstance(meta, StreamMeta) else meta["dim"])
    if (cols.stop or 0) > dim or (cols.start or 0) >= dim or len(range(dim)[cols]) == 0:
        raise ConfigError(f"stream spec '{spec}' reaches past the width or selects no column: stream '{name}' has "
                          f"{dim} columns (0..{dim - 1}, its meta.json dim)")
    return len(range(dim)[cols])


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


def collate(items: list[dict]) -> dict:
    """Pad each stream to its longest member; keep the true lengths (float16 store -> float32)."""
    streams = items[0]["x"].keys()
    return {
        "index": torch.tensor([it["index"] for it in items]),
        "x": {s: pad_sequence([it["x"][s] for it in items], batch_first=True).float() for s in streams},
        "lengths": {s: torch.tensor([len(it["x"][s]) for it in items]) for s in streams},
        "y": torch.stack([it["y"] for it in items]).float(),
    }


