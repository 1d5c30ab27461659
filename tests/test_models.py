import lightning as L
import pytest
import torch

from eri.errors import ConfigError
from eri.models import ENCODERS, FUSIONS, create_model
from eri.models.encoders import fit_to_length
from eri.training.task import ERITask

DIMS = {"a": 6, "b": 5}
SMALL = {
    "gru_transformer": {"hidden": 16, "gru_layers": 2, "blocks": 2, "heads": 2, "ff_dim": 32, "positions": "sinusoidal"},
    "masked_rnn": {"hidden": 8, "max_len": 40, "fc_dim": 8},
    "lstm": {"hidden": 8, "bidirectional": True},
    "mean_pool": {"hidden": 8},
}


def _model(encoder, fusion="concat", center=False, **fkw):
    torch.manual_seed(0)
    branches = [
        {"name": "v", "streams": ["a"], "center": center, "encoder": {"name": encoder, **SMALL[encoder]}},
        {"name": "w", "streams": ["b"], "center": center, "encoder": {"name": encoder, **SMALL[encoder]}},
    ]
    return create_model(branches, {"name": fusion, **fkw}, DIMS).eval()


def _batch(lengths_a, lengths_b, seed=0):
    g = torch.Generator().manual_seed(seed)
    la, lb = torch.tensor(lengths_a), torch.tensor(lengths_b)
    x = {"a": torch.randn(len(la), int(la.max()), 6, generator=g), "b": torch.randn(len(lb), int(lb.max()), 5, generator=g)}
    for s, ls in (("a", la), ("b", lb)):
        for i, n in enumerate(ls):
            x[s][i, n:] = 0
    return x, {"a": la, "b": lb}


def test_every_encoder_is_registered():
    assert set(ENCODERS) == set(SMALL)
    assert set(FUSIONS) == {"concat", "weighted_avg", "gated", "attention"}


@pytest.mark.parametrize("encoder", sorted(SMALL))
def test_padding_invariance(encoder):
    """A video's prediction does not depend on the longer videos batched with it."""
    model = _model(encoder)
    x, lengths = _batch([12, 30, 25], [3, 9, 7])
    with torch.no_grad():
        together = model(x, lengths)
        alone = model({"a": x["a"][:1, :12], "b": x["b"][:1, :3]}, {"a": lengths["a"][:1], "b": lengths["b"][:1]})
    torch.testing.assert_close(alone, together[:1], atol=1e-5, rtol=0)
    assert together.shape == (3, 7) and bool(((together > 0) & (together < 1)).all())


def test_unidirectional_lstm_equals_the_packed_sequence_reference():
    """The padded fast path gives what the MuSe baseline's packed LSTM gives, whatever the padding."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    enc = ENCODERS["lstm"](6, hidden=8, layers=2)
    x, lengths = _batch([12, 30, 25], [3, 9, 7])
    xa, la = x["a"], lengths["a"]
    with torch.no_grad():
        _, (h, _) = enc.lstm(pack_padded_sequence(xa, la, batch_first=True, enforce_sorted=False))
        ours = enc(xa, la)
        longer = enc(torch.cat([xa, torch.randn(3, 20, 6)], dim=1), la)  # garbage after each video's end
    torch.testing.assert_close(ours, h[-1], atol=1e-6, rtol=0)
    torch.testing.assert_close(longer, ours, atol=1e-6, rtol=0)


@pytest.mark.parametrize("encoder", ["gru_transformer", "masked_rnn"])
def test_centred_branch_ignores_a_per_video_offset_and_padding(encoder):
    """``center: true`` removes each video's own baseline (identity, lighting): adding a constant vector to all
    of one video's valid steps leaves its prediction unchanged, and padding still does not matter."""
    model = _model(encoder, center=True)
    x, lengths = _batch([12, 30, 25], [3, 9, 7])
    shifted = {s: v.clone() for s, v in x.items()}
    shifted["a"][0, :12] += torch.randn(6) * 5
    shifted["b"][0, :3] += torch.randn(5) * 5
    with torch.no_grad():
        base, moved = model(x, lengths), model(shifted, lengths)
        alone = model({"a": x["a"][:1, :12], "b": x["b"][:1, :3]}, {"a": lengths["a"][:1], "b": lengths["b"][:1]})
        plain = _model(encoder, center=False)(shifted, lengths)
    torch.testing.assert_close(moved, base, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, base[:1], atol=1e-5, rtol=0)
    assert not torch.allclose(plain[0], _model(encoder, center=False)(x, lengths)[0], atol=1e-3)


@pytest.mark.parametrize("fusion", ["concat", "weighted_avg", "gated", "attention"])
def test_fusions_are_padding_invariant_and_in_unit_range(fusion):
    model = _model("gru_transformer", fusion)
    x, lengths = _batch([12, 30], [3, 9])
    with torch.no_grad():
        together = model(x, lengths)
        alone = model({"a": x["a"][:1, :12], "b": x["b"][:1, :3]}, {"a": lengths["a"][:1], "b": lengths["b"][:1]})
    torch.testing.assert_close(alone, together[:1], atol=1e-5, rtol=0)


def test_masked_rnn_output_depends_on_content_not_padding_length():
    model = _model("masked_rnn")
    x, lengths = _batch([12, 30], [3, 9])
    x2 = {k: v.clone() for k, v in x.items()}
    x2["a"][0, 5] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x, lengths)[0], model(x2, lengths)[0])


def test_long_video_policy():
    x = torch.arange(10.0).view(1, 10, 1)
    sub, n = fit_to_length(x, torch.tensor([10]), 5, "subsample")
    assert n.tolist() == [5] and sub.flatten().tolist() == [0, 2, 4, 6, 8]
    trunc, _ = fit_to_length(x, torch.tensor([10]), 5, "truncate")
    assert trunc.flatten().tolist() == [0, 1, 2, 3, 4]
    short, n = fit_to_length(x[:, :3], torch.tensor([3]), 5, "subsample")
    assert n.tolist() == [3] and short.flatten().tolist() == [0, 1, 2, 0, 0]
    with pytest.raises(ValueError, match="exceeds"):
        fit_to_length(x, torch.tensor([10]), 5, "error")


def test_unknown_component_keys_list_valid_ones():
    with pytest.raises(ConfigError, match=r"valid keys: \['name', 'hidden'"):
        create_model([{"streams": ["a"], "encoder": {"name": "lstm", "hiden": 3}}], {"name": "concat"}, DIMS)
    with pytest.raises(ConfigError, match="unknown fusion 'sum'"):
        create_model([{"streams": ["a"], "encoder": {"name": "lstm"}}], {"name": "sum"}, DIMS)
    with pytest.raises(ConfigError, match="unknown stream"):
        create_model([{"streams": ["c"], "encoder": {"name": "lstm"}}], {"name": "concat"}, DIMS)


class _OneBatch(L.LightningDataModule):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def train_dataloader(self):
        return torch.utils.data.DataLoader([self.batch], batch_size=None)


@pytest.mark.parametrize("routing", [True, False])
def test_routing_freezes_masked_step_weights_under_adamw(routing):
    """After an AdamW step (momentum + weight decay 0.5) on short videos, the FC weights of
    masked steps are bit-identical with routing, and change without it."""
    torch.manual_seed(0)
    enc = {"name": "masked_rnn", "hidden": 8, "max_len": 40, "fc_dim": 8, "routing": routing}
    model = create_model([{"name": "m", "streams": ["a"], "encoder": enc}], {"name": "concat"}, DIMS)
    task = ERITask(model, {"pcc": 1.0}, {"name": "adamw", "lr": 1e-2, "weight_decay": 0.5, "lr_step_epochs": 0, "lr_gamma": 1.0})
    x, lengths = _batch([12, 20, 7, 15], [1, 1, 1, 1])
    batch = {"x": {"a": x["a"]}, "lengths": {"a": lengths["a"]}, "y": torch.rand(4, 7), "index": torch.arange(4)}
    fc = model.branches["m"].encoder.fc.weight
    before = fc.detach().clone()
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(task, datamodule=_OneBatch(batch))
    masked_cols = slice(20 * 8, None)  # steps >= 20 (the longest video) x hidden 8
    if routing:
        assert torch.equal(fc.detach()[:, masked_cols], before[:, masked_cols])
        state = trainer.optimizers[0].state[fc]
        assert torch.all(state["exp_avg"][:, masked_cols] == 0) and torch.all(state["exp_avg_sq"][:, masked_cols] == 0)
    else:
        assert not torch.equal(fc.detach()[:, masked_cols], before[:, masked_cols])
    assert not torch.equal(fc.detach()[:, :masked_cols.start], before[:, :masked_cols.start])  # real steps learn


@pytest.mark.parametrize("encoder", sorted(SMALL))
def test_standardized_inputs_keep_padding_invariance(encoder):
    torch.manual_seed(0)
    stats = {"a": (torch.randn(6), torch.rand(6) + 0.5), "b": (torch.randn(5), torch.rand(5) + 0.5)}
    branches = [{"name": "v", "streams": ["a", "b"], "encoder": {"name": encoder, **SMALL[encoder]}}]
    model = create_model(branches, {"name": "concat"}, DIMS, stats).eval()
    x, lengths = _batch([12, 30], [12, 30])
    with torch.no_grad():
        together = model(x, lengths)
        alone = model({"a": x["a"][:1, :12], "b": x["b"][:1, :12]}, {"a": lengths["a"][:1], "b": lengths["b"][:1]})
    torch.testing.assert_close(alone, together[:1], atol=1e-5, rtol=0)
    assert "branches.v.mean" in model.state_dict()  # carried by checkpoints
