"""The MMA objective (paper 000, section 3.1; DESIGN.md), with per-task masks.

    L = w_va (1 - (CCC_v + CCC_a) / 2) + w_expr CE + w_au BCE + w_cons BCE_soft(AU probs, AU pseudo-labels)

Datasets label only some tasks, so each supervised term averages over the samples (for AUs: the
sample-AU entries) that carry its label; a batch without any contributes an exact 0 that still
depends on the graph (no NaN, no gradient). The consistency term needs no labels: the expected AU
activation under the predicted expression distribution, ``q = p_expr @ T`` with T the 0/1
expression-AU table, is matched to the predicted AU probabilities by binary cross-entropy with soft
targets, averaged over the 17 AUs and the batch (every sample with an image).

Choices where the paper is silent: gradients flow through both sides of the consistency term
(it couples the two heads, as the paper's "infuse prior knowledge ... consistent representations"
describes; ``consistency_detach: true`` makes q a fixed target instead); CCC is computed over the
batch's labelled samples, so a batch needs two of them for the VA term (fewer contribute 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eri.models.mma import expression_au_table
from eri.training.losses import ccc

LOSS_KEYS = ("va", "expr", "au", "consistency", "consistency_detach")


def consistency_loss(
    expr_logits: torch.Tensor, au_logits: torch.Tensor, table: torch.Tensor, detach: bool = False
) -> torch.Tensor:
    """Per-sample BCE with soft targets between AU probs and ``softmax(expr) @ table`` -> (N,)."""
    q = expr_logits.softmax(-1) @ table
    if detach:
        q = q.detach()
    return F.binary_cross_entropy_with_logits(au_logits, q, reduction="none").mean(-1)


class MMALoss(nn.Module):
    """Weighted sum of the four terms; ``forward`` returns (total, {term: value}) for logging."""

    def __init__(
        self,
        va: float = 1.0,
        expr: float = 1.0,
        au: float = 1.0,
        consistency: float = 1.0,
        consistency_detach: bool = False,
    ):
        super().__init__()
        self.w = {"va": float(va), "expr": float(expr), "au": float(au), "consistency": float(consistency)}
        self.detach = bool(consistency_detach)
        self.register_buffer("table", expression_au_table(), persistent=False)

    def forward(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]):
        terms = {}
        zero = out["va"].sum() * 0.0  # keeps a graph so an all-masked batch still backpropagates (zeros)
        if self.w["va"]:
            m = batch["va_mask"]
            if int(m.sum()) >= 2:
                terms["va"] = 1 - ccc(out["va"][m], batch["va"][m]).mean()
            else:
                terms["va"] = zero
        if self.w["expr"]:
            m = batch["expr"] >= 0
            terms["expr"] = F.cross_entropy(out["expr"][m], batch["expr"][m]) if bool(m.any()) else zero
        if self.w["au"]:
            m = batch["au_mask"]
            if bool(m.any()):
                bce = F.binary_cross_entropy_with_logits(out["au"], batch["au"], reduction="none")
                terms["au"] = bce[m].mean()
            else:
                terms["au"] = zero
        if self.w["consistency"]:
            valid = batch["valid"]
            per = consistency_loss(out["expr"], out["au"], self.table, self.detach)
            terms["consistency"] = per[valid].mean() if bool(valid.any()) else zero
        total = sum(self.w[k] * v for k, v in terms.items()) if terms else zero
        return total, {k: v.detach() for k, v in terms.items()}
