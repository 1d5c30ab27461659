"""Late fusion of per-branch summaries into the 7 intensities, by name.

Each fusion takes ``{branch: (B, d_branch)}`` and returns (B, 7) in [0, 1]; the head (FC layers
then a sigmoid) lives inside it, because ``weighted_avg`` needs one head per branch.

- ``concat``: the papers' late fusion, summaries concatenated, then the head.
- ``weighted_avg``: one head per branch, predictions averaged with learned softmax weights.
- ``gated``: each summary projected to a common width and scaled by a sigmoid gate computed from
  all summaries, then summed and fed to the head.
- ``attention``: a learned query attends over the projected summaries (one token per branch).
"""

from __future__ import annotations

import torch
from torch import nn

from eri.constants import EMOTIONS

FUSIONS: dict[str, type[nn.Module]] = {}


def register_fusion(name: str):
    def deco(cls):
        FUSIONS[name] = cls
        return cls

    return deco


def make_head(in_dim: int, hidden: list[int], dropout: float, out_dim: int = len(EMOTIONS)) -> nn.Sequential:
    """FC layers with ReLU (and dropout) between them; the last layer gives the 7 logits."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers += [nn.Dropout(dropout), nn.Linear(in_dim, out_dim)]
    return nn.Sequential(*layers)


@register_fusion("concat")
class ConcatFusion(nn.Module):
    def __init__(self, in_dims: dict[str, int], head_hidden: list[int] = (), dropout: float = 0.0):
        super().__init__()
        self.head = make_head(sum(in_dims.values()), list(head_hidden), dropout)

    def forward(self, summaries: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.cat(list(summaries.values()), dim=-1)))


@register_fusion("weighted_avg")
class WeightedAverageFusion(nn.Module):
    def __init__(self, in_dims: dict[str, int], head_hidden: list[int] = (), dropout: float = 0.0):
        super().__init__()
        self.heads = nn.ModuleDict({b: make_head(d, list(head_hidden), dropout) for b, d in in_dims.items()})
        self.logit_weights = nn.Parameter(torch.zeros(len(in_dims)))

    def forward(self, summaries: dict[str, torch.Tensor]) -> torch.Tensor:
        preds = torch.stack([torch.sigmoid(self.heads[b](s)) for b, s in summaries.items()], dim=0)
        return torch.einsum("k,kbe->be", torch.softmax(self.logit_weights, 0), preds)


class _Projected(nn.Module):
    """Shared part of gated and attention fusion: each summary projected to ``width``."""

    def __init__(self, in_dims: dict[str, int], width: int, head_hidden, dropout: float):
        super().__init__()
        self.proj = nn.ModuleDict({b: nn.Linear(d, width) for b, d in in_dims.items()})
        self.head = make_head(width, list(head_hidden), dropout)

    def project(self, summaries: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.proj[b](s) for b, s in summaries.items()], dim=1)  # (B, K, width)


@register_fusion("gated")
class GatedFusion(_Projected):
    def __init__(self, in_dims: dict[str, int], width: int = 128, head_hidden: list[int] = (), dropout: float = 0.0):
        super().__init__(in_dims, width, head_hidden, dropout)
        self.gate = nn.Linear(sum(in_dims.values()), len(in_dims) * width)
        self.width = width

    def forward(self, summaries: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.project(summaries)
        g = torch.sigmoid(self.gate(torch.cat(list(summaries.values()), dim=-1))).view_as(v)
        return torch.sigmoid(self.head((g * v).sum(dim=1)))


@register_fusion("attention")
class AttentionFusion(_Projected):
    def __init__(self, in_dims: dict[str, int], width: int = 128, head_hidden: list[int] = (), dropout: float = 0.0):
        super().__init__(in_dims, width, head_hidden, dropout)
        self.query = nn.Parameter(torch.randn(width) * width**-0.5)
        self.key = nn.Linear(width, width)

    def forward(self, summaries: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.project(summaries)
        weights = torch.softmax(self.key(v) @ self.query * v.shape[-1] ** -0.5, dim=1)  # (B, K)
        return torch.sigmoid(self.head((weights.unsqueeze(-1) * v).sum(dim=1)))
