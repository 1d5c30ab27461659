"""What a trained model needs to run on its own, saved inside every checkpoint (``checkpoint["eri_model"]``).

- the model: branches, fusion, the width of every stream spec, and the standardisation statistics
  it was built with (so it is rebuilt exactly, never from placeholders);
- the input policy (`eri.data.dataset.InputPolicy`) and the mean training label, which an
  unusable video is predicted with, as in training;
- each stream's store metadata (``meta.json``: rate, extractor, its config, face and decode
  settings), so new videos are extracted exactly like the training data;
- the ``eri`` version that wrote it.

Tensors and plain values only: a checkpoint stays loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral, Real

import torch

from eri.constants import EMOTIONS, VERSION
from eri.errors import CheckpointError

KEY = "eri_model"


@dataclass
class ModelSpec:
    branches: list
    fusion: dict
    stream_dims: dict  # stream spec -> columns it feeds
    stats: dict | None  # stream spec -> (mean, std) float32 tensors; None: no standardisation
    policy: dict  # InputPolicy fields
    train_mean: list  # 7 floats
    streams: dict = field(default_factory=dict)  # stream name -> the store's meta.json
    eri_version: str = ""

    def build(self):
        """The ERIModel of this spec (weights still to be loaded)."""
        from eri.models import create_model

        return create_model(self.branches, self.fusion, self.stream_dims, self.stats)

    def to_checkpoint(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "stats"}
        out["stats"] = None if self.stats is None else {
            s: {"mean": torch.as_tensor(m).float(), "std": torch.as_tensor(sd).float()} for s, (m, sd) in self.stats.items()
        }
        return out

    @classmethod
    def from_checkpoint(cls, d: dict, where: str = "checkpoint") -> "ModelSpec":
        """The spec stored in a model file, every field checked (type, length, range: a model file may
        come from a stranger); a problem is one `CheckpointError` line naming ``where``."""
        try:
            problem = _problem(d)
            if problem is None:
                stats = None if d["stats"] is None else {s: (v["mean"], v["std"]) for s, v in d["stats"].items()}
                return cls(
                    branches=list(d["branches"]),
                    fusion=dict(d["fusion"]),
                    stream_dims={str(k): int(v) for k, v in d["stream_dims"].items()},
                    stats=stats,
                    policy=dict(d["policy"]),
                    train_mean=[float(x) for x in d["train_mean"]],
                    streams=dict(d.get("streams") or {}),
                    eri_version=str(d.get("eri_version", "")),
                )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            problem = f"is incomplete ({type(e).__name__}: {e})"
        raise CheckpointError(f"{where}: its model spec {problem}")


def _problem(d) -> str | None:
    """What is wrong with a stored spec's fields, or None (the streams' face and decode settings are
    checked against the extraction schema by `eri.features.config.check_stream_settings`)."""
    if not isinstance(d, dict):
        return f"is a {type(d).__name__}, not a mapping"
    missing = [k for k in ("branches", "fusion", "stream_dims", "stats", "policy", "train_mean") if k not in d]
    if missing:
        return f"is incomplete (no {missing})"
    dims = d["stream_dims"]
    if not isinstance(dims, dict) or not dims:
        return "has no stream_dims mapping"
    bad = [k for k, v in dims.items()
           if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, Integral) or v < 1]
    if bad:
        return f"has stream_dims that are not positive integers: {bad[:3]}"
    branches = d["branches"]
    if not isinstance(branches, list) or not branches:
        return "has no branches list"
    for i, b in enumerate(branches):
        streams = b.get("streams") if isinstance(b, dict) else None
        if not isinstance(streams, list) or not streams or not all(isinstance(s, str) and s in dims for s in streams):
            return f"has branches[{i}] without a list of streams named in stream_dims"
    if not isinstance(d["fusion"], dict) or not isinstance(d["policy"], dict):
        return "has a fusion or policy that is not a mapping"
    mean = d["train_mean"]
    if not isinstance(mean, (list, tuple)) or len(mean) != len(EMOTIONS) or not all(
        isinstance(x, Real) and not isinstance(x, bool) for x in mean
    ):
        return f"has a train_mean that is not {len(EMOTIONS)} numbers (one per emotion): {str(mean)[:80]}"
    stats = d["stats"]
    if stats is not None:
        if not isinstance(stats, dict):
            return "has stats that are not a mapping"
        for s, v in stats.items():
            ok = isinstance(v, dict) and all(
                isinstance(v.get(k), torch.Tensor) and v[k].ndim == 1 for k in ("mean", "std")
            )
            if not ok or (s in dims and not len(v["mean"]) == len(v["std"]) == dims[s]):
                return f"has stats for '{s}' that are not two 1-D tensors of its width"
    streams = d.get("streams") or {}
    if not isinstance(streams, dict) or not all(isinstance(m, dict) for m in streams.values()):
        return "has streams that are not a mapping of stream name to its settings"
    return version_problem(d.get("eri_version", ""))


def version_problem(version) -> str | None:
    """A model file written by a newer eri than this one (a later major or minor version) may hold
    fields this code does not know and would silently ignore: refused, saying which to install.
    Older files and files without a version (run directories before 0.2) load."""
    mine = _major_minor(VERSION)
    theirs = _major_minor(str(version)) if isinstance(version, str) else None
    if theirs is not None and theirs > mine:
        return (f"was written by eri {version}, newer than this eri {VERSION}: "
                f"install eri >= {theirs[0]}.{theirs[1]} to use it")
    return None


def _major_minor(version: str) -> tuple[int, int] | None:
    parts = version.strip().split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None
