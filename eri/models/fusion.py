"""Late fusion of per-branch summaries into the 7 intensities, by name.

Each fusion takes ``{branch: (B, d_branch)}`` and returns (B, 7) in [0, 1]; the head (FC layers
then a sigmoid) lives inside it, because ``weighted_avg`` needs one head per branch.

- ``concat``: the papers' late fusion, summaries concatenated, then the head. Its head is fully
  specified (``head_hidden``, ``dropout``, ``head_bias``, ``head_activation``, ``head_input_dropout``)
  so paper 004's authors' head is expressible: Linear(512, 256, no bias) -> Dropout(0.3) ->
  Linear(256, 7, no bias), nothing between; the other fusions use the default head (ReLU, biases).
- ``weighted_avg``: one head per branch, predictions averaged with learned softmax weights.
- ``gated``: each summary projected to a common width and scaled by a sigmoid gate computed from
  all summaries, then summed and fed to the head.
- ``attention``: a learned query attends over the projected summaries (one token per branch).
"""

from __future__ import annotations

import torch
from torch import nn

from eri.constants import EMOTIONS
from eri.registry import Registry

FUSIONS = Registry("fusion", fixed=("in_dims",))  # ({branch: width}, **config) -> module


def make_head(in_dim: int, hidden: list[int], dropout: float, out_dim: int = len(EMOTIONS), bias: bool = True,
              activation: str = "relu", input_dropout: bool = True) -> nn.Sequential:
    """FC layers ending in the 7 logits: between two layers an activation (``relu``, ``gelu`` or
    ``none``: the two layers compose to one linear map) and dropout; ``input_dropout`` also drops out
    the summaries before the first layer (eri's default; the authors' head does not)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"head activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = [nn.Dropout(dropout)] if input_dropout else []
    for width in hidden:
        layers += [nn.Linear(in_dim, width, bias=bias), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim, bias=bias))
    return nn.Sequential(*[m for m in layers if not isinstance(m, nn.Identity)])


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "none": nn.Identity}


@FUSIONS.register("concat", description="summaries concatenated, then the head (the papers' late fusion)")
class ConcatFusion(nn.Module):
    def __init__(self, in_dims: dict[str, int], head_hidden: list[int] = (), dropout: float = 0.0, head_bias: bool = True,
                 head_activation: str = "relu", head_input_dropout: bool = True):
        super().__init__()
        self.head = make_head(sum(in_dims.values()), list(head_hidden), dropout, bias=head_bias,
                              activation=head_activation, input_dropout=head_input_dropout)

    def forward(self, summaries: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.cat(list(summaries.values()), dim=-1)))


@FUSIONS.register("weighted_avg", description="one head per branch, predictions averaged with learned softmax weights")
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


@FUSIONS.register("gated", description="projected summaries scaled by sigmoid gates from all of them, summed, head")
class GatedFusion(_Projected):
    def __init__(self, in_dims: dict[str, int], width: int = 128, head_hidden: list[int] = (), dropout: float = 0.0):
        super().__init__(in_dims, width, head_hidden, dropout)
        self.gate = nn.Linear(sum(in_dims.values()), len(in_dims) * width)
        self.width = width

    def forward(self, summaries: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.project(summaries)
        g = torch.sigmoid(self.gate(torch.cat(list(summaries.values()), dim=-1))).view_as(v)
        return torch.sigmoid(self.head((g * v).sum(dim=1)))


@FUSIONS.register("attention", description="a learned query attends over the projected summaries, then the head")
class AttentionFusion(_Projected):
    def __init__(self, in_dims: dict[str, int], width: int = 128, head_hidden: list[int] = (), dropout: float = 0.0):
        super().__init__(in_dims, width, head_hidden, dropout)
        self.query = nn.Parameter(torch.randn(width) * width**-0.5)
        self.key = nn.Linear(width, width)

    def forward(self, summaries: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.project(summaries)
        weights = torch.softmax(self.key(v) @ self.query * v.shape[-1] ** -0.5, dim=1)  # (B, K)
        return torch.sigmoid(self.head((weights.unsqueeze(-1) * v).sum(dim=1)))
