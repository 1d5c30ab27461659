"""The whole video-level model: branches (streams -> encoder) -> fusion (with its head).

A branch concatenates one or more per-step streams of the same rate (paper 004 feeds holistic and
AU features, 546-d per frame, to one visual encoder) and encodes them into one summary.
``create_model(branches, fusion, stream_dims)`` builds it from plain config dicts, checking every
key against the chosen component's signature so a typo is an error that lists the valid keys.
With ``stream_stats`` each branch standardises its input with the training set's per-column mean
and std, kept as buffers so a checkpoint carries them to evaluation and prediction.

``center: true`` on a branch (an extension, not in either paper) also subtracts each video's own mean
over its valid steps, per column. Emotional events are short departures from a person's neutral
baseline, while identity, lighting and microphone add a per-video offset that is large in
high-dimensional embeddings (ResNet, MFCC); removing it leaves the encoder only the departures.
"""

from __future__ import annotations

import torch
from torch import nn

from eri.errors import ConfigError
from eri.models.encoders import ENCODERS, masked_mean
from eri.models.fusion import FUSIONS


class Branch(nn.Module):
    def __init__(self, streams: list[str], encoder: nn.Module, mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 center: bool = False):
        super().__init__()
        self.streams, self.encoder, self.center = list(streams), encoder, bool(center)
        self.standardize = mean is not None
        if self.standardize:
            self.register_buffer("mean", mean.float())
            self.register_buffer("std", std.float())

    def inputs(self, x: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor]):
        first = self.streams[0]
        for s in self.streams[1:]:
            if not torch.equal(lengths[s], lengths[first]):
                raise ValueError(f"streams {self.streams} in one branch must have the same steps per video")
        feats = x[first] if len(self.streams) == 1 else torch.cat([x[s] for s in self.streams], dim=-1)
        if self.standardize:  # padded steps change value too; every encoder ignores them by length
            feats = (feats - self.mean) / self.std
        if self.center:  # per-video baseline over the true steps only, so padding cannot shift it
            feats = feats - masked_mean(feats, lengths[first]).unsqueeze(1)
        return feats, lengths[first]

    def forward(self, x, lengths) -> torch.Tensor:
        return self.encoder(*self.inputs(x, lengths))


class ERIModel(nn.Module):
    """``forward(x, lengths)`` with per-stream padded tensors -> (B, 7) intensities in [0, 1]."""

    def __init__(self, branches: dict[str, Branch], fusion: nn.Module):
        super().__init__()
        self.branches = nn.ModuleDict(branches)
        self.fusion = fusion

    @property
    def streams(self) -> list[str]:
        return list(dict.fromkeys(s for b in self.branches.values() for s in b.streams))

    def forward(self, x: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fusion({name: b(x, lengths) for name, b in self.branches.items()})

    def routing_masks(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        return [m for b in self.branches.values() if hasattr(b.encoder, "routing_masks") for m in b.encoder.routing_masks()]


BRANCH_KEYS = ("name", "streams", "encoder", "center")


def create_model(branches: list[dict], fusion: dict, stream_dims: dict[str, int], stream_stats: dict | None = None) -> ERIModel:
    """Build from config: ``branches`` = [{name, streams, encoder: {name, ...}, center?}], ``fusion`` = {name, ...}."""
    built = {}
    for i, spec in enumerate(branches):
        spec = dict(spec)
        unknown = sorted(set(spec) - set(BRANCH_KEYS))
        if unknown or "streams" not in spec or "encoder" not in spec:
            raise ConfigError(
                f"model.branches[{i}]: unknown key(s) {unknown} or no streams/encoder; valid keys: {list(BRANCH_KEYS)}"
            )
        name = spec.get("name") or f"branch{i}"
        streams = list(spec["streams"])
        missing = [s for s in streams if s not in stream_dims]
        if missing:
            raise ConfigError(f"branch '{name}' uses unknown stream(s) {missing}; available: {sorted(stream_dims)}")
        where = f"model.branches[{i}].encoder"
        encoder = ENCODERS.build(spec["encoder"], where, in_dim=sum(stream_dims[s] for s in streams))
        mean = std = None
        if stream_stats is not None:
            mean = torch.cat([torch.as_tensor(stream_stats[s][0]) for s in streams])
            std = torch.cat([torch.as_tensor(stream_stats[s][1]) for s in streams])
        built[name] = Branch(streams, encoder, mean, std, center=spec.get("center", False))
    fusion_module = FUSIONS.build(fusion, "model.fusion", in_dims={n: b.encoder.out_dim for n, b in built.items()})
    return ERIModel(built, fusion_module)
