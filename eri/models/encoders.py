"""Stream encoders: (B, T, D) padded sequences + true lengths -> one (B, out_dim) summary per video.

Every encoder is padding invariant: a video's summary does not depend on how much padding its
batch adds (tested for each). Each is registered in `ENCODERS` with its size presets (``paper``, the
papers' sizes; ``demo``, what `configs/demo.yaml` trains on 2 CPU cores; ``tiny``, tests and CI; see
`eri.models.presets`) and its search knobs (space key -> constructor key, `eri.search.space`):

- ``gru_transformer``: paper 004. GRU, then a transformer encoder with a learned regression token
  prepended and a key padding mask; the token's output is the summary.
- ``masked_rnn``: paper 000 (MRNN). Fixed length L, GRU, all L outputs concatenated, Mask layer by
  true length, FC 32. Routing freezes the FC weights of masked steps (see `routing_masks`).
- ``lstm``: the MuSe 2022 baseline, an LSTM over packed sequences, last hidden state.
- ``mean_pool``: the naive baseline, a per-step MLP then the masked mean over valid steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from eri.registry import Registry

ENCODERS = Registry("encoder", fixed=("in_dim",))  # (in_dim, **config) -> module with .out_dim


def step_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True on real steps."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = step_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    return (x * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


@ENCODERS.register(
    "gru_transformer",  # paper 004: GRU -> transformer with a regression token
    presets={
        "paper": {"hidden": 256, "gru_layers": 2, "blocks": 4, "heads": 4, "dropout": 0.2},
        "demo": {"hidden": 64, "gru_layers": 1, "blocks": 2, "heads": 4, "dropout": 0.1, "ff_dim": 128},
        "tiny": {"hidden": 16, "gru_layers": 1, "blocks": 1, "heads": 2, "dropout": 0.1, "ff_dim": 32},
    },
    knobs={"hidden": "hidden", "layers": "gru_layers", "blocks": "blocks", "dropout": "dropout"},
)
class GRUTransformer(nn.Module):
    """Paper 004's temporal encoder: GRU -> transformer encoder with a regression token.

    Defaults are the paper's sizes (2-layer GRU of 256, 4 blocks, 4 heads, dropout 0.2) and, where
    the paper is silent, PyTorch's transformer layer as eri has always used it: post-norm, ReLU,
    feed-forward width 1024, biased q/k/v projections, a token drawn with std 0.02. The authors'
    code (HKUST-NISL/ABAW5, models/trans.py) differs in each, and each is an option here:
    ``norm="pre"`` (LayerNorm before attention and before the feed-forward, no final LayerNorm),
    ``activation="gelu"``, ``ff_dim=256``, ``qkv_bias=False`` (the output projection keeps its bias)
    and ``token_init=1.0``. ``block_init``: ``clones`` (PyTorch's ``nn.TransformerEncoder``: every block
    starts as a copy of one, q/k/v drawn Xavier-uniform, the attention output bias zero) or
    ``independent`` (each block drawn on its own, every projection initialised as an ``nn.Linear``,
    as the authors' blocks are). ``positions``: ``none`` (as the authors) or ``sinusoidal`` added to the
    GRU outputs. Unlike the authors' code, batches are padded and masked.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 256,
        gru_layers: int = 2,
        blocks: int = 4,
        heads: int = 4,
        dropout: float = 0.2,
        ff_dim: int = 1024,
        positions: str = "none",
        norm: str = "post",
        activation: str = "relu",
        qkv_bias: bool = True,
        token_init: float = 0.02,
        block_init: str = "clones",
    ):
        super().__init__()
        if positions not in ("none", "sinusoidal"):
            raise ValueError(f"positions must be 'none' or 'sinusoidal', got '{positions}'")
        if norm not in ("post", "pre") or activation not in ("relu", "gelu"):
            raise ValueError(f"norm must be post or pre and activation relu or gelu, got {norm!r}, {activation!r}")
        if block_init not in ("clones", "independent"):
            raise ValueError(f"block_init must be 'clones' or 'independent', got {block_init!r}")
        self.out_dim, self.positions = hidden, positions
        self.gru = nn.GRU(in_dim, hidden, num_layers=gru_layers, batch_first=True)
        self.token = nn.Parameter(torch.randn(1, 1, hidden) * float(token_init))
        layer = nn.TransformerEncoderLayer(hidden, heads, ff_dim, dropout, activation=activation, batch_first=True,
                                           norm_first=norm == "pre")
        self.transformer = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        if not qkv_bias:  # q/k/v projections without bias (the attention output projection keeps its own)
            for block in self.transformer.layers:
                del block.self_attn.in_proj_bias
                block.self_attn.register_parameter("in_proj_bias", None)
        if block_init == "independent":
            for block in self.transformer.layers:
                _init_like_linear(block)


    def _tokens(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, _ = self.gru(x)  # unidirectional: outputs at real steps never see the padding after them
        if self.positions == "sinusoidal":
            h = h + sinusoidal_positions(h.shape[1], h.shape[2]).to(h)
        tokens = torch.cat([self.token.expand(len(h), -1, -1), h], dim=1)
        pad = ~step_mask(lengths + 1, tokens.shape[1])  # the regression token is never masked
        return tokens, pad

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        tokens, pad = self._tokens(x, lengths)
        return self.transformer(tokens, src_key_padding_mask=pad)[:, 0]

    @torch.no_grad()
    def token_attention(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) attention of the regression token over the steps in the last block, averaged
        over heads (paper 004, Fig. 2). Padded steps get 0."""
        tokens, pad = self._tokens(x, lengths)
        *first, last = self.transformer.layers
        for layer in first:
            tokens = layer(tokens, src_key_padding_mask=pad)
        q = last.norm1(tokens) if last.norm_first else tokens
        _, attn = last.self_attn(q[:, :1], q, q, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
        return attn[:, 0, 1:]


def _init_like_linear(block: nn.TransformerEncoderLayer) -> None:
    """Redraw one block as separate ``nn.Linear`` layers would start: q/k/v as Linear(d, 3d) (Kaiming
    uniform, a = sqrt 5), the output projection and the feed-forward with their own uniform biases."""
    attn = block.self_attn
    nn.init.kaiming_uniform_(attn.in_proj_weight, a=math.sqrt(5))
    if attn.in_proj_bias is not None:
        bound = attn.in_proj_weight.shape[1] ** -0.5
        nn.init.uniform_(attn.in_proj_bias, -bound, bound)
    for linear in (attn.out_proj, block.linear1, block.linear2):
        linear.reset_parameters()


def fit_to_length(x: torch.Tensor, lengths: torch.Tensor, length: int, policy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring a padded batch to exactly ``length`` steps, vectorised over the batch.

    Videos longer than ``length``: ``subsample`` picks ``length`` uniformly spaced steps over the
    whole video (default: keeps the whole time span); ``truncate`` keeps the first ``length``
    steps (only when a config asks for it); ``error`` raises. Shorter videos are zero-padded.
    """
    if policy not in ("subsample", "truncate", "error"):
        raise ValueError(f"long-video policy must be subsample, truncate or error, got '{policy}'")
    too_long = lengths > length
    if policy == "error" and bool(too_long.any()):
        raise ValueError(f"video of {int(lengths.max())} steps exceeds the masked RNN's length {length}")
    j = torch.arange(length, device=x.device)[None, :].expand(len(x), -1)
    if policy == "subsample":
        j = torch.where(too_long[:, None], (j * lengths[:, None]) // length, j)
    new_len = lengths.clamp(max=length)
    if x.shape[1] < length:
        x = torch.cat([x, x.new_zeros(len(x), length - x.shape[1], x.shape[2])], dim=1)
    idx = j.clamp(max=x.shape[1] - 1)
    out = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[2]))
    return out * step_mask(new_len, length)[..., None].to(out.dtype), new_len


@ENCODERS.register(
    "masked_rnn",  # paper 000: the demo trains it at paper size (it is fast on CPU)
    presets={
        "paper": {"hidden": 128, "max_len": 480, "fc_dim": 32, "rnn": "gru", "rnn_layers": 1},
        "demo": {"hidden": 128, "max_len": 480, "fc_dim": 32, "rnn": "gru", "rnn_layers": 1},
        "tiny": {"hidden": 16, "max_len": 480, "fc_dim": 32, "rnn": "gru", "rnn_layers": 1},
    },
    knobs={"hidden": "hidden", "layers": "rnn_layers"},
)
class MaskedRNN(nn.Module):
    """Paper 000's MRNN: pad to L, GRU, concatenate all L outputs, Mask layer, FC 32.

    ``mask``: zero the GRU outputs of steps at or beyond the true length (the Mask layer).
    ``routing``: in a training step, the FC weights that connect to steps masked for every video
    of the batch must not change. Gradients there are zero when ``mask`` is on, but Adam/AdamW
    momentum and weight decay would still move them, so the update itself is restricted: the
    encoder exposes the frozen columns through ``routing_masks`` and the training task restores
    them (and their optimizer state) after each optimizer step. The FC activation is not in the
    paper; ReLU is our choice (``fc_activation: none`` gives the purely linear variant).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 128,
        max_len: int = 480,
        fc_dim: int = 32,
        rnn: str = "gru",
        rnn_layers: int = 1,
        mask: bool = True,
        routing: bool = True,
        long_videos: str = "subsample",
        fc_activation: str = "relu",
    ):
        super().__init__()
        if rnn not in ("gru", "lstm"):
            raise ValueError(f"rnn must be 'gru' or 'lstm', got '{rnn}'")
        if fc_activation not in ("relu", "none"):
            raise ValueError(f"fc_activation must be 'relu' or 'none', got '{fc_activation}'")
        self.out_dim, self.max_len, self.hidden = fc_dim, max_len, hidden
        self.mask, self.routing, self.long_videos = mask, routing, long_videos
        self.rnn = (nn.GRU if rnn == "gru" else nn.LSTM)(in_dim, hidden, num_layers=rnn_layers, batch_first=True)
        self.fc = nn.Linear(max_len * hidden, fc_dim)
        self.act = nn.ReLU() if fc_activation == "relu" else nn.Identity()
        self._frozen_steps: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, lengths = fit_to_length(x, lengths, self.max_len, self.long_videos)
        h, _ = self.rnn(x)
        real = step_mask(lengths, self.max_len)
        if self.mask:
            h = h * real[..., None].to(h.dtype)
        if self.training and self.routing:
            self._frozen_steps = ~real.any(dim=0)  # steps masked for every video in this batch
        return self.act(self.fc(h.reshape(len(h), -1)))

    def routing_masks(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(parameter, bool mask of entries to keep unchanged) for the last training forward."""
        if not (self.training and self.routing) or self._frozen_steps is None:
            return []
        cols = self._frozen_steps.repeat_interleave(self.hidden)  # column t*H + k belongs to step t
        return [(self.fc.weight, cols[None, :].expand_as(self.fc.weight))]


@ENCODERS.register(
    "lstm",  # the MuSe 2022 baseline
    presets={"paper": {"hidden": 128, "layers": 2}, "demo": {"hidden": 64, "layers": 1},
             "tiny": {"hidden": 16, "layers": 1}},
    knobs={"hidden": "hidden", "layers": "layers", "dropout": "dropout"},
)
class LastStepLSTM(nn.Module):
    """The MuSe 2022 baseline: LSTM whose summary is the last real step's hidden state (both
    directions concatenated when bidirectional).

    Unidirectional, it runs over the padded batch and picks each video's last real output, which
    equals the packed-sequence result (a real step never sees the padding after it) and trains
    several times faster on CPU: backpropagating through a packed sequence slices the whole packed
    input once per step, which grows with T^2 (the LSTM alone, batch 32, T = 300, one thread:
    43 vs 177 videos/s at 1 x 64, 7 vs 65 at the baseline's 2 x 128).
    Bidirectional, the backward direction must start at each video's own end, so it packs.
    """

    def __init__(self, in_dim: int, hidden: int = 128, layers: int = 2, bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.out_dim = hidden * (2 if bidirectional else 1)
        self.lstm = nn.LSTM(
            in_dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional, dropout=dropout
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.lstm.bidirectional:
            packed = pack_padded_sequence(x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
            return torch.cat([h[-2], h[-1]], dim=-1)
        out, _ = self.lstm(x)
        last = (lengths.clamp(min=1) - 1).to(out.device)
        return out[torch.arange(len(out), device=out.device), last]


@ENCODERS.register(
    "mean_pool",  # the naive baseline
    presets={"paper": {"hidden": 256}, "demo": {"hidden": 64}, "tiny": {"hidden": 16}},
    knobs={"hidden": "hidden", "dropout": "dropout"},
)
class MeanPool(nn.Module):
    """The naive baseline: a per-step MLP, then the mean over real steps (every frame weighs the same)."""

    def __init__(self, in_dim: int, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        self.out_dim = hidden
        self.step = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.step(x), lengths)
