"""MMA loss: the consistency term against a hand computation, per-task masks, CCC, the model's interface."""

import math

import numpy as np
import pytest
import torch

from eri.errors import ConfigError
from eri.mma.losses import MMALoss, ccc, consistency_loss
from eri.models.mma import AU_IDS, EXPRESSIONS, create_mma, expression_au_table

SMALL = {"backbone": {"name": "small_resnet", "widths": [8, 16]}, "crop_size": 32, "embed_dim": 16}


def test_expression_au_table_matches_design():
    t = expression_au_table()
    assert t.shape == (7, 17)
    assert t[EXPRESSIONS.index("Neutral")].sum() == 0
    happy = {AU_IDS[k] for k in torch.nonzero(t[EXPRESSIONS.index("Happiness")]).flatten().tolist()}
    assert happy == {6, 12, 25}
    fear = {AU_IDS[k] for k in torch.nonzero(t[EXPRESSIONS.index("Fear")]).flatten().tolist()}
    assert fear == {1, 2, 4, 5, 20, 25, 26}
    assert t.sum(0).min() >= 1  # every one of the 17 AUs belongs to some expression


def test_consistency_equals_hand_computation():
    # one sample: p(Happiness) = 0.75, p(Neutral) = 0.25 -> q(AU12) = q(AU25) = q(AU6) = 0.75, others 0
    p = torch.zeros(1, 7)
    p[0, EXPRESSIONS.index("Happiness")], p[0, EXPRESSIONS.index("Neutral")] = 0.75, 0.25
    expr_logits = p.clamp_min(1e-12).log()
    au_prob = torch.full((1, 17), 0.2)
    au_prob[0, AU_IDS.index(12)] = 0.9
    au_logits = torch.logit(au_prob)
    got = consistency_loss(expr_logits, au_logits, expression_au_table()).item()
    terms = []
    for k, au in enumerate(AU_IDS):
        q = 0.75 if au in (6, 12, 25) else 0.0
        a = au_prob[0, k].item()
        terms.append(-(q * math.log(a) + (1 - q) * math.log(1 - a)))
    assert got == pytest.approx(sum(terms) / 17, rel=1e-5)


def _batch(n, va=True, expr=True, au=True):
    g = torch.Generator().manual_seed(0)
    return {
        "va": torch.rand(n, 2, generator=g) * 2 - 1,
        "va_mask": torch.full((n,), va),
        "expr": torch.randint(0, 7, (n,), generator=g) if expr else torch.full((n,), -1),
        "au": (torch.rand(n, 17, generator=g) > 0.5).float(),
        "au_mask": torch.full((n, 17), au),
        "valid": torch.ones(n, dtype=torch.bool),
    }


def _outputs(n, requires_grad=True):
    g = torch.Generator().manual_seed(1)
    out = {
        "va": torch.tanh(torch.randn(n, 2, generator=g)),
        "expr": torch.randn(n, 7, generator=g),
        "au": torch.randn(n, 17, generator=g),
    }
    return {k: v.requires_grad_(requires_grad) for k, v in out.items()}


def test_terms_equal_their_definitions():
    out, b = _outputs(6), _batch(6)
    b["au_mask"][0, :5] = False
    total, terms = MMALoss(va=2.0, expr=1.0, au=0.5, consistency=0.25)(out, b)
    va_ref = 1 - ccc(out["va"], b["va"]).mean()
    expr_ref = torch.nn.functional.cross_entropy(out["expr"], b["expr"])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["au"], b["au"], reduction="none")
    au_ref = bce[b["au_mask"]].mean()
    cons_ref = consistency_loss(out["expr"], out["au"], expression_au_table()).mean()
    assert terms["au"].item() == pytest.approx(au_ref.item()) and au_ref.item() != pytest.approx(bce.mean().item())
    assert total.item() == pytest.approx((2 * va_ref + expr_ref + 0.5 * au_ref + 0.25 * cons_ref).item(), rel=1e-6)


def test_ccc_against_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) + 0.5
    ref = [
        2
        * np.cov(x[:, j], y[:, j], bias=True)[0, 1]
        / (x[:, j].var() + y[:, j].var() + (x[:, j].mean() - y[:, j].mean()) ** 2)
        for j in range(2)
    ]
    np.testing.assert_allclose(ccc(torch.tensor(x), torch.tensor(y)).numpy(), ref, rtol=1e-6)


@pytest.mark.parametrize("missing", ["va", "expr", "au", "all"])
def test_batch_without_a_task_is_finite_and_gives_that_head_nothing(missing):
    flags = {t: missing not in (t, "all") for t in ("va", "expr", "au")}
    out, b = _outputs(4), _batch(4, **flags)
    total, terms = MMALoss(consistency=0.0)(out, b)
    assert torch.isfinite(total)
    total.backward()
    for t, present in flags.items():
        assert terms[t].item() == 0.0 or present
        grad = out[t].grad
        assert (grad is not None and grad.abs().sum() > 0) == present, t


def test_au_only_batch_gives_expression_head_no_gradient_from_expression_loss():
    torch.manual_seed(0)
    model = create_mma(SMALL)
    b = _batch(4, va=False, expr=False, au=True)
    out = model(torch.randn(4, 3, 32, 32))
    expr_only, _ = MMALoss(va=0, expr=1, au=0, consistency=0)(out, b)
    au_only, _ = MMALoss(va=0, expr=0, au=1, consistency=0)(out, b)
    total, _ = MMALoss()(out, b)
    g_expr = torch.autograd.grad(expr_only, model.expr_head.weight, retain_graph=True, allow_unused=True)[0]
    assert g_expr is None or g_expr.abs().sum() == 0
    g_au = torch.autograd.grad(au_only, model.au_head.weight, retain_graph=True)[0]
    assert g_au.abs().sum() > 0
    # with the consistency term on, AU labels do reach the expression head, through the table only
    g_total = torch.autograd.grad(total, model.expr_head.weight)[0]
    assert g_total.abs().sum() > 0


def test_model_outputs26_and_preprocess():
    torch.manual_seed(0)
    model = create_mma(SMALL).eval()
    crops = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    x = model.preprocess(crops)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    y = model.outputs26(x)
    assert y.shape == (3, 26)
    assert torch.allclose(y[:, 2:9].sum(1), torch.ones(3)) and (y[:, :2].abs() <= 1).all()
    assert ((y[:, 9:] > 0) & (y[:, 9:] < 1)).all()
    assert model.backbone_features(x).shape == (3, 16)
    with pytest.raises(ValueError, match="uint8"):
        model.preprocess(crops.astype(np.float32))
    with pytest.raises(ConfigError, match="valid keys"):
        create_mma({**SMALL, "embedding": 3})
