import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from eri.constants import EMOTIONS
from eri.errors import ConfigError
from eri.training.losses import WeightedLoss, ccc_loss, l2_loss, pcc_loss
from eri.training.metrics import pcc_per_emotion, score


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 1, (n, 7))
    return y + rng.normal(0, 0.5, (n, 7)) * rng.uniform(0.1, 2, 7), y


def test_split_pcc_equals_scipy_per_column():
    pred, y = _data()
    ours = pcc_per_emotion(pred, y)
    ref = [pearsonr(pred[:, k], y[:, k]).statistic for k in range(7)]
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    s = score(pred, y)
    assert list(s["pcc"]) == list(EMOTIONS)
    assert s["mean_pcc"] == pytest.approx(np.mean(ref), abs=1e-6)


def test_split_pcc_is_not_mean_of_batch_pcc():
    pred, y = _data(64, seed=1)
    batches = np.mean([pcc_per_emotion(pred[i : i + 8], y[i : i + 8]).mean() for i in range(0, 64, 8)])
    assert abs(batches - score(pred, y)["mean_pcc"]) > 1e-3


def test_constant_predictions_warn_and_score_zero():
    pred, y = _data()
    pred[:, 2] = 0.5
    with pytest.warns(UserWarning, match="Anxiety"):
        r = pcc_per_emotion(pred, y)
    assert r[2] == 0.0 and np.isfinite(r).all()


def test_pcc_rejects_bad_shapes():
    with pytest.raises(ValueError, match="at least 2"):
        pcc_per_emotion(np.zeros((1, 7)), np.zeros((1, 7)))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        pcc_per_emotion(np.zeros((5, 7)), np.zeros((5, 6)))


def test_losses_match_references():
    pred, y = _data(50, seed=2)
    p, t = torch.tensor(pred), torch.tensor(y)
    assert float(l2_loss(p, t)) == pytest.approx(np.mean((pred - y) ** 2))
    ref_r = np.mean([pearsonr(pred[:, k], y[:, k]).statistic for k in range(7)])
    assert float(pcc_loss(p, t)) == pytest.approx(1 - ref_r, abs=1e-6)
    ccc = [
        2 * np.cov(pred[:, k], y[:, k], bias=True)[0, 1]
        / (pred[:, k].var() + y[:, k].var() + (pred[:, k].mean() - y[:, k].mean()) ** 2)
        for k in range(7)
    ]
    assert float(ccc_loss(p, t)) == pytest.approx(1 - np.mean(ccc), abs=1e-6)
    total, terms = WeightedLoss({"l2": 2.0, "pcc": 0.5})(p, t)
    assert float(total) == pytest.approx(2 * float(terms["l2"]) + 0.5 * float(terms["pcc"]))


def test_pcc_loss_has_gradient_and_unknown_term_errors():
    p = torch.rand(8, 7, requires_grad=True)
    pcc_loss(p, torch.rand(8, 7)).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="valid"):
        WeightedLoss({"mae": 1.0})


def test_pcc_loss_on_a_batch_of_one_video_is_finite_without_gradient():
    """The last batch of an epoch may hold one video (9 usable videos, batch 8): r is undefined there, and
    sqrt(0)'s gradient used to turn every weight into NaN."""
    pred = torch.rand(1, 7, requires_grad=True)
    loss = pcc_loss(pred, torch.rand(1, 7))
    loss.backward()
    assert loss.item() == 1.0 and torch.equal(pred.grad, torch.zeros(1, 7))
    pred = torch.rand(2, 7, requires_grad=True)  # two videos: a real correlation and a finite gradient
    pcc_loss(pred, torch.rand(2, 7)).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_the_table_shows_the_ceilings_it_has():
    """A synthetic split too small for a ceiling records none (null): the table still prints, without it."""
    from eri.training.metrics import format_table

    res = {s: score(np.random.default_rng(i).random((30, 7)), np.random.default_rng(9).random((30, 7)))
           for i, s in enumerate(("val", "test"))}
    table = format_table(res, {"val": None, "test": 0.7})
    ceiling = next(line for line in table.splitlines() if line.startswith("ceiling"))
    assert ceiling.split()[1:] == ["nan", "0.7000"]
