"""A new encoder in one file: the class and its registration (presets and search knobs with it) are all
it takes for configs, `model.preset`, the search space, the training benchmark and `eri list` to use it
(tests/test_registry.py). Imported, it registers ``toy_mean``."""

import torch
from torch import nn

from eri.models.encoders import ENCODERS, masked_mean


@ENCODERS.register(
    "toy_mean",
    presets={"paper": {"hidden": 64}, "demo": {"hidden": 32}, "tiny": {"hidden": 8}},
    knobs={"hidden": "hidden", "toy_activation": "activation"},
)
class ToyMean(nn.Module):
    """Masked mean over the real steps, then a linear layer and an activation."""

    def __init__(self, in_dim: int, hidden: int = 64, activation: str = "relu"):
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be relu or tanh, got {activation!r}")
        self.out_dim = hidden
        self.proj = nn.Linear(in_dim, hidden)
        self.act = nn.ReLU() if activation == "relu" else nn.Tanh()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(masked_mean(x, lengths)))
