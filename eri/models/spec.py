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

import torch

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
        try:
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
            raise CheckpointError(f"{where}: its model spec is incomplete ({type(e).__name__}: {e})") from None
