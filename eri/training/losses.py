"""Training losses over a batch of (B, 7) predictions and labels, and weighted sums of them.

``l2``: mean squared error (paper 004). ``pcc``: 1 - Pearson r per emotion, averaged (paper 000).
``ccc``: 1 - Lin's concordance correlation per emotion, averaged. The correlation losses are
batch statistics, so they need batches of a few videos at least (paper 000 uses 4).
"""

from __future__ import annotations

import torch

from eri.config import loss_weights
from eri.errors import ConfigError
from eri.registry import Registry

EPS = 1e-8
LOSSES = Registry("loss term")  # config `loss: {term: weight}`; (pred, target) -> scalar


@LOSSES.register("l2", description="mean squared error (paper 004)")
def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((pred - target) ** 2)


@LOSSES.register("pcc", description="1 - Pearson r per emotion, averaged over the 7 (paper 000)")
def pcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """On a batch of one video r is undefined and sqrt(0)'s gradient NaN (a training set one video over a
    multiple of the batch size diverged on its last batch): that batch gives 1 with no gradient."""
    if pred.shape[0] < 2:
        return pred.sum() * 0 + 1
    p, t = pred - pred.mean(0), target - target.mean(0)
    r = (p * t).sum(0) / (p.pow(2).sum(0).sqrt() * t.pow(2).sum(0).sqrt() + EPS)
    return 1 - r.mean()


def ccc(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lin's concordance correlation per column of (N, C) -> (C,), population moments."""
    pm, tm = pred.mean(0), target.mean(0)
    cov = ((pred - pm) * (target - tm)).mean(0)
    return 2 * cov / (pred.var(0, unbiased=False) + target.var(0, unbiased=False) + (pm - tm) ** 2 + EPS)


@LOSSES.register("ccc", description="1 - Lin's concordance correlation per emotion, averaged over the 7")
def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1 - ccc(pred, target).mean()


def check_loss(weights: dict, where: str = "loss") -> dict[str, float]:
    """The loss weights as floats, or a ConfigError: unknown terms, and weights that are not finite
    numbers >= 0 or are all 0 (`eri.config.loss_weights`, which config loading runs first)."""
    unknown = sorted(set(weights) - set(LOSSES))
    if unknown or not weights:
        raise ConfigError(f"{where}: unknown loss term(s) {unknown or '(none given)'}; valid: {sorted(LOSSES)}")
    return loss_weights(weights, where)


class WeightedLoss:
    """``{"l2": 1.0, "pcc": 0.5}`` -> sum of the weighted terms; terms also returned for logging."""

    def __init__(self, weights: dict[str, float]):
        self.weights = {k: v for k, v in check_loss(weights).items() if v != 0.0}

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {k: LOSSES[k](pred, target) for k in self.weights}
        return sum(w * terms[k] for k, w in self.weights.items()), terms
