import lightning as L
import pytest
import torch

from eri.errors import ConfigError
from eri.models import ENCODERS, FUSIONS, create_model
from eri.models.encoders import fit_to_length
from eri.models.presets import encoder_preset
from eri.training.task import ERITask

DIMS = {"a": 6, "b": 5}
SMALL = {  # options beyond the tiny preset worth testing; any other registered encoder runs at its tiny preset
    "gru_transformer": {"hidden": 16, "gru_layers": 2, "blocks": 2, "heads": 2, "ff_dim": 32, "positions": "sinusoidal"},
    "masked_rnn": {"hidden": 8, "max_len": 40, "fc_dim": 8},
    "lstm": {"hidden": 8, "bidirectional": True},
    "mean_pool": {"hidden": 8},
}


def _small(encoder: str) -> dict:
    return {"name": encoder, **SMALL[encoder]} if encoder in SMALL else encoder_preset(encoder, "tiny")


def _model(encoder, fusion="concat", center=False, **fkw):
    torch.manual_seed(0)
    branches = [
        {"name": "v", "streams": ["a"], "center": center, "encoder": _small(encoder)},
        {"name": "w", "streams": ["b"], "center": center, "encoder": _small(encoder)},
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


def test_every_encoder_is_registered_with_the_three_size_presets():
    assert set(SMALL) <= set(ENCODERS)
    for entry in ENCODERS.entries():
        assert {"paper", "demo", "tiny"} <= set(entry.presets), entry.name
        assert entry.description, entry.name
    assert set(FUSIONS) == {"concat", "weighted_avg", "gated", "attention"}


@pytest.mark.parametrize("encoder", list(ENCODERS))  # every registered encoder, a new one too
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


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_standardized_inputs_keep_padding_invariance(encoder):
    torch.manual_seed(0)
    stats = {"a": (torch.randn(6), torch.rand(6) + 0.5), "b": (torch.randn(5), torch.rand(5) + 0.5)}
    branches = [{"name": "v", "streams": ["a", "b"], "encoder": _small(encoder)}]
    model = create_model(branches, {"name": "concat"}, DIMS, stats).eval()
    x, lengths = _batch([12, 30], [12, 30])
    with torch.no_grad():
        together = model(x, lengths)
        alone = model({"a": x["a"][:1, :12], "b": x["b"][:1, :12]}, {"a": lengths["a"][:1], "b": lengths["b"][:1]})
    torch.testing.assert_close(alone, together[:1], atol=1e-5, rtol=0)
    assert "branches.v.mean" in model.state_dict()  # carried by checkpoints


AUTHORS = {"norm": "pre", "activation": "gelu", "qkv_bias": False, "token_init": 1.0, "block_init": "independent"}


@pytest.mark.parametrize("option", [{}, *({k: v} for k, v in AUTHORS.items()), AUTHORS])
def test_gru_transformer_options_keep_shapes_and_padding_invariance(option):
    """Each of the authors' choices (and all of them together) on top of eri's defaults."""
    torch.manual_seed(0)
    enc = ENCODERS["gru_transformer"](6, hidden=16, gru_layers=1, blocks=2, heads=4, ff_dim=16, **option).eval()
    x, lengths = _batch([9, 4, 7], [1, 1, 1])
    out = enc(x["a"], lengths["a"])
    assert out.shape == (3, 16)
    for i, n in enumerate(lengths["a"].tolist()):  # each video alone, unpadded
        torch.testing.assert_close(out[i : i + 1], enc(x["a"][i : i + 1, :n], lengths["a"][i : i + 1]), atol=1e-5, rtol=1e-5)
    has_bias = all(layer.self_attn.in_proj_bias is not None for layer in enc.transformer.layers)
    assert has_bias == option.get("qkv_bias", True)
    assert (enc.token.std() > 0.5) == (option.get("token_init", 0.02) == 1.0)
    first, second = (layer.self_attn.in_proj_weight for layer in enc.transformer.layers)
    assert torch.equal(first, second) == (option.get("block_init", "clones") == "clones")  # PyTorch's clones
    if option.get("block_init") == "independent":  # drawn as nn.Linear(16, 48): U(-1/4, 1/4), not Xavier's 0.306
        assert 0.2 < first.abs().max() <= 16**-0.5


def test_the_authors_block_is_what_the_options_build():
    """A pre-norm, GELU, unbiased-q/k/v encoder equals a from-scratch implementation of the blocks in the
    authors' models/trans.py: x += W_o attention(LN1 x) + b_o; x += W_2 gelu(W_1 LN2 x + b_1) + b_2; no final norm."""
    torch.manual_seed(0)
    enc = ENCODERS["gru_transformer"](6, hidden=16, gru_layers=1, blocks=2, heads=4, ff_dim=8, **AUTHORS).eval()
    tokens = torch.randn(2, 5, 16)
    x = tokens
    for layer in enc.transformer.layers:
        h = layer.norm1(x)
        q, k, v = torch.nn.functional.linear(h, layer.self_attn.in_proj_weight).chunk(3, dim=-1)
        q, k, v = (t.reshape(2, 5, 4, 4).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) * 4**-0.5, dim=-1) @ v
        x = x + layer.self_attn.out_proj(att.transpose(1, 2).reshape(2, 5, 16))
        x = x + layer.linear2(torch.nn.functional.gelu(layer.linear1(layer.norm2(x))))
    torch.testing.assert_close(enc.transformer(tokens), x, atol=1e-5, rtol=1e-5)


def test_a_head_without_nonlinearity_is_exactly_two_linear_maps():
    torch.manual_seed(0)
    fusion = FUSIONS["concat"]({"v": 12, "w": 4}, head_hidden=[8], dropout=0.3, head_bias=False,
                               head_activation="none", head_input_dropout=False).eval()
    assert [type(m).__name__ for m in fusion.head] == ["Linear", "Dropout", "Linear"]
    s = {"v": torch.randn(5, 12), "w": torch.randn(5, 4)}
    w1, w2 = fusion.head[0].weight, fusion.head[2].weight
    assert fusion.head[0].bias is None and fusion.head[2].bias is None
    want = torch.sigmoid(torch.cat([s["v"], s["w"]], 1) @ (w2 @ w1).T)
    torch.testing.assert_close(fusion(s), want, atol=1e-6, rtol=1e-6)
    relu = FUSIONS["concat"]({"v": 12}, head_hidden=[8], dropout=0.1)  # eri's default head: the old layout
    assert [type(m).__name__ for m in relu.head] == ["Dropout", "Linear", "ReLU", "Dropout", "Linear"]
