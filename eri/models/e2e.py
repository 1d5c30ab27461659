"""Paper 000 end to end (issue 21 item 3): the MMA CNN per frame, then the masked RNN, trained jointly.

Encoder ``mma_rnn`` reads a face-crop stream (`eri.features.crops`): (B, T, S*S*3) pixels (uint8 values as
float) + lengths. Per video it keeps the frames the masked RNN would keep (`fit_to_length`, before any
pixel reaches the CNN), runs the MMA net (`eri.models.mma.create_mma`) on each valid frame, takes its 26-d
head output (``features: outputs26``, what regime 1 extracts as the ``mma`` stream) or its pooled backbone
features (``features: backbone``), and feeds `MaskedRNN` (the class itself, not a copy).

Why this shape:
- Memory at L = 480 and batch 4 is bounded by ``train_frames``: in a training step only that many
  randomly drawn valid frames per video (torch's seeded RNG) pass the CNN with gradients; the others pass
  it under ``no_grad``, so the RNN still sees every step (as at scoring) and activation memory does not
  grow with the length. ``checkpoint_frames`` instead recomputes the CNN over frame chunks in backward
  (all frames get gradients; about 1.3x the compute); both together are allowed. The data side reads at
  most L frames per video (`eri.data.crops_dataset`). BatchNorm updates its running statistics from every
  chunk, with or without gradient (a checkpointed chunk updates them twice: a known PyTorch effect).
- Initialisation as the paper: ``mma_checkpoint`` (a `tools/train_mma.py` checkpoint, `load_mma`, loaded
  with weights_only=True; its architecture must match ``mma``) and ``rnn_from_run`` (a regime-1 run's
  ``model.ckpt``: its masked_rnn GRU and FC, and its branch's standardisation of the 26-d stream, which
  this encoder then applies to the CNN outputs). The fusion head is not copied. A model file rebuilds the
  encoder under `weights_follow` (its weights replace any init), so neither file is needed to predict.
- ``backbone_lr_scale``: the MMA net's own learning rate (lr x scale), a second optimiser group
  (`param_group`, read by `eri.training.task`); ``freeze_backbone_epochs``: the MMA net is frozen (no
  gradient, BatchNorm in eval mode) for the first epochs (`set_epoch`, called by the task).
- ``batchnorm``: how the MMA net's BatchNorm layers normalise while it trains. ``batch`` (PyTorch's
  training mode): each chunk's own statistics, and the running ones drift towards them. ``frozen``: the
  running statistics (the checkpoint's) in training as at scoring, never updated; the affine weights still
  learn, as detectron2's FrozenBatchNorm2d. ``auto``: ``frozen`` with an ``mma_checkpoint``, ``batch``
  without (from scratch there are no statistics to keep). Paper 000 does not say. Measured on small-faces
  with the table's checkpoint: in training mode the chunk statistics of ERI face crops (the frames of one or
  two videos, not the MMA images the statistics came from) put the 26 outputs 10.6 standard deviations away
  from the checkpoint's, which regime 1's RNN was trained on (median per-output correlation 0.49), so
  ``batch`` discards the initialisation in the first epoch; ``frozen`` keeps what the RNN reads in training
  equal to what it reads at scoring (tested).
- On a GPU the CNN runs under bf16 autocast in channels_last.
- ``aux_mma_weight`` > 0 keeps the MMA multi-task loss as an auxiliary term (paper 000 trains the CNN on
  it), so fine-tuning on the ERI loss does not wash out the affect heads the RNN reads. ERI videos carry
  no per-frame MMA labels, so the term comes from the MMA training images themselves: ``aux_mma_config``
  is a `tools/train_mma.py` config (path relative to the working directory) whose ``data`` (datasets,
  weights, augmentation, align size, batch size unless ``aux_mma_batch_size``), ``loss`` weights and
  ``seed`` are used; its ``model`` is not (the images are cut at this encoder's MMA crop size). Each
  training step, `auxiliary_loss` draws the next batch of an endless stream over them (eri.mma's data
  module and mixing sampler, started on the first call; its own CPU random stream, seeded by that config's
  ``seed`` plus the DDP rank, so the ERI path draws the same numbers with or without it), runs this very
  MMA net on it and returns weight x `MMALoss`; the task adds it to the ERI loss and logs ``train/aux``.
  While the net is frozen the term would have no gradient: nothing is drawn and it is 0. With ``batchnorm:
  batch`` its BatchNorm statistics see both image sources (ERI crops and MMA images). A model built under
  `weights_follow` (a model file, prediction) has no auxiliary term and never reads the config. A resumed
  run restarts the stream. The images and loss are `eri.mma.auxiliary` (imported by name at first use:
  eri.mma imports eri.models).

A step that is not a square RGB image (D != 3 S^2) is read as a one-row grey strip (repeated to 3
channels), so the encoder also runs on any per-step vector: the shared encoder tests feed 5- and 6-d steps.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import math
from contextvars import ContextVar
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from eri.errors import CheckpointError, ConfigError
from eri.models.encoders import ENCODERS, MaskedRNN, fit_to_length, step_mask

_INIT = ContextVar("mma_rnn_init", default=True)


@contextlib.contextmanager
def weights_follow():
    """Build models without reading ``mma_checkpoint`` / ``rnn_from_run``: their weights come from a model file."""
    token = _INIT.set(False)
    try:
        yield
    finally:
        _INIT.reset(token)


def _mma(backbone: dict, embed: int) -> dict:
    return {"backbone": backbone, "embed_dim": embed}


@ENCODERS.register(
    "mma_rnn",  # paper 000 end to end: MMA CNN per frame -> masked RNN, trained jointly (input: a crops stream)
    presets={
        "paper": {"mma": {**_mma({"name": "resnet18"}, 256), "crop_size": 112}, "hidden": 128, "max_len": 480,
                  "fc_dim": 32, "train_frames": 32, "chunk": 128},
        "demo": {"mma": _mma({"name": "small_resnet", "widths": [16, 32, 64]}, 64), "hidden": 64, "max_len": 480,
                 "fc_dim": 32, "train_frames": 32, "chunk": 128},
        "tiny": {"mma": _mma({"name": "small_resnet", "widths": [8, 16]}, 16), "hidden": 16, "max_len": 480,
                 "fc_dim": 32, "train_frames": 8, "chunk": 256},
    },
    knobs={"hidden": "hidden", "layers": "rnn_layers"},
)
class MMARNN(nn.Module):
    """MMA CNN per frame -> `MaskedRNN` (module docstring). ``out_dim`` = ``fc_dim``."""

    takes_crops = True  # its stream is a face-crop stream (eri.data.crops_dataset), not features

    def __init__(self, in_dim: int, mma: dict | None = None, features: str = "outputs26", hidden: int = 128,
                 max_len: int = 480, fc_dim: int = 32, rnn: str = "gru", rnn_layers: int = 1, mask: bool = True,
                 routing: bool = True, long_videos: str = "subsample", fc_activation: str = "relu",
                 train_frames: int = 0, checkpoint_frames: bool = False, chunk: int = 128,
                 freeze_backbone_epochs: int = 0, backbone_lr_scale: float = 0.1, batchnorm: str = "batch",
                 mma_checkpoint: str | None = None, rnn_from_run: str | None = None,
                 aux_mma_weight: float = 0.0, aux_mma_config: str | None = None, aux_mma_batch_size: int | None = None):
        super().__init__()
        from eri.models.mma import create_mma

        if features not in ("outputs26", "backbone"):
            raise ValueError(f"features must be 'outputs26' or 'backbone', got {features!r}")
        if batchnorm not in BATCHNORM:
            raise ValueError(f"batchnorm must be one of {', '.join(BATCHNORM)}, got {batchnorm!r}")
        if train_frames < 0 or chunk < 1 or freeze_backbone_epochs < 0 or backbone_lr_scale < 0:
            raise ValueError("train_frames, freeze_backbone_epochs, backbone_lr_scale >= 0 and chunk >= 1")
        side = math.isqrt(in_dim // 3)
        self.side = side if 3 * side * side == in_dim else 0  # 0: a grey strip (module docstring)
        spec = copy.deepcopy(dict(mma or _mma({"name": "small_resnet"}, 64)))
        spec.setdefault("crop_size", self.side or 1)
        self.mma = create_mma(spec)
        width = 26 if features == "outputs26" else self.mma.backbone.out_dim
        self.features, self.max_len, self.long_videos = features, int(max_len), long_videos
        self.train_frames, self.checkpoint_frames, self.chunk = int(train_frames), bool(checkpoint_frames), int(chunk)
        self.freeze_backbone_epochs, self.backbone_lr_scale = int(freeze_backbone_epochs), float(backbone_lr_scale)
        self.rnn = MaskedRNN(width, hidden, max_len, fc_dim, rnn, rnn_layers, mask, routing, long_videos, fc_activation)
        self.out_dim = self.rnn.out_dim
        self.register_buffer("feat_mean", torch.zeros(width))  # the regime-1 run's standardisation (rnn_from_run)
        self.register_buffer("feat_std", torch.ones(width))
        self.frozen_stats = batchnorm == "frozen" or (batchnorm == "auto" and bool(mma_checkpoint))
        self.frozen = self.freeze_backbone_epochs > 0
        self.grad_frames = 0  # frames that passed the CNN with gradients in the last forward (tests, memory)
        self._channels_last = False
        if _INIT.get():
            if mma_checkpoint:
                self._load_mma(mma_checkpoint)
            if rnn_from_run:
                self._load_rnn(rnn_from_run)
        self._set_frozen(self.frozen)
        self.aux_mma_weight = _check_aux(self.mma, aux_mma_weight, aux_mma_config, aux_mma_batch_size)
        if self.aux_mma_weight and _INIT.get():  # only a model built to train (not from a model file) has the term
            self.aux_data = _auxiliary(aux_mma_config, self.mma.crop_size, aux_mma_batch_size)
            self.auxiliary_loss = self._auxiliary_loss  # the task adds what a module with this method returns

    # ------------------------------------------------------------------ init
    def _load_mma(self, path: str) -> None:
        from eri.models.mma import load_mma

        try:
            self.mma.load_state_dict(load_mma(path).state_dict())
        except RuntimeError as e:
            raise CheckpointError(f"{path}: its MMA net does not fit encoder mma_rnn's `mma` architecture "
                                  f"({str(e).splitlines()[0][:200]})") from None

    def _load_rnn(self, run: str) -> None:
        from eri.io import load_torch

        path = Path(run) / "model.ckpt" if Path(run).is_dir() else Path(run)
        state = load_torch(path, "regime-1 model file (rnn_from_run)")
        state = state.get("state_dict", {}) if isinstance(state, dict) else {}
        heads = [k[: -len("encoder.rnn.weight_ih_l0")] for k in state if k.endswith("encoder.rnn.weight_ih_l0")]
        if not heads:
            raise CheckpointError(f"{path}: no masked_rnn branch to initialise mma_rnn's RNN from (rnn_from_run)")
        own = {k: v for k, v in state.items() if k.startswith(heads[0] + "encoder.") and
               k[len(heads[0] + "encoder."):].split(".")[0] in ("rnn", "fc")}
        try:
            self.rnn.load_state_dict({k[len(heads[0] + "encoder."):]: v for k, v in own.items()})
        except RuntimeError as e:
            raise CheckpointError(f"{path}: its masked RNN does not fit mma_rnn's ({str(e).splitlines()[0][:200]})") from None
        mean, std = state.get(heads[0] + "mean"), state.get(heads[0] + "std")
        if mean is not None and std is not None and mean.shape == self.feat_mean.shape:
            self.feat_mean.copy_(mean)
            self.feat_std.copy_(std)

    # ------------------------------------------------------------- training hooks
    def set_epoch(self, epoch: int) -> None:
        """Called by the task at each training epoch: freeze the MMA net for the first epochs."""
        self._set_frozen(epoch < self.freeze_backbone_epochs)

    def _set_frozen(self, frozen: bool) -> None:
        self.frozen = bool(frozen)
        for p in self.mma.parameters():
            p.requires_grad_(not self.frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.mma.eval()  # frozen: BatchNorm's running statistics stay as loaded
        elif self.frozen_stats:
            _batchnorm_layers(self.mma, eval_mode=True)  # batchnorm: frozen (module docstring)
        return self

    def param_group(self, lr: float) -> dict:
        """The MMA net's optimiser group: its own, smaller learning rate."""
        return {"params": list(self.mma.parameters()), "lr": lr * self.backbone_lr_scale}

    # ------------------------------------------------------------------ forward
    def images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, D) pixel values 0..255 -> the MMA net's normalised (N, 3, s, s) input."""
        from eri.models.mma import resize_uint8

        if not self.side:
            return self.mma.normalize(pixels[:, None, None, :].expand(-1, 3, -1, -1))
        x = pixels.reshape(len(pixels), self.side, self.side, 3).permute(0, 3, 1, 2)
        if self.mma.crop_size != self.side:  # as MMANet.preprocess: resize the uint8 image
            x = resize_uint8(x.round().clamp(0, 255).to(torch.uint8), self.mma.crop_size)
        x = self.mma.normalize(x)
        return x.contiguous(memory_format=torch.channels_last if x.is_cuda else torch.contiguous_format)

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            out = self.mma.outputs26(x) if self.features == "outputs26" else self.mma.backbone_features(x)
        return out.float()

    def _chunks(self, pixels: torch.Tensor) -> tuple:
        """``pixels`` in chunks of at most ``chunk`` frames, none of a single frame when there are more: in
        training BatchNorm takes each chunk's statistics and cannot from one sample (a remainder of 1 joins
        the chunk before it, one frame over ``chunk``)."""
        n, c = len(pixels), self.chunk
        sizes = [c] * (n // c) + ([n % c] if n % c else [])
        if len(sizes) > 1 and sizes[-1] == 1:
            sizes[-2:] = [sizes[-2] + 1]
        return pixels.split(sizes)

    def _run(self, pixels: torch.Tensor, grad: bool) -> torch.Tensor:
        if pixels.is_cuda and not self._channels_last:
            self.mma.to(memory_format=torch.channels_last)
            self._channels_last = True
        outs = []
        for c in self._chunks(pixels):
            # a lone frame in training (e.g. the only frame with gradients in a step): BatchNorm uses its
            # running statistics for it, as at scoring, since one sample has no batch statistics
            lone = len(c) == 1 and self.mma.training
            with _batchnorm_eval(self.mma) if lone else contextlib.nullcontext():
                if not grad:
                    with torch.no_grad():
                        outs.append(self._net(self.images(c)))
                elif self.checkpoint_frames and not lone:  # (a recompute would run outside the block)
                    outs.append(checkpoint(lambda c: self._net(self.images(c)), c, use_reentrant=False))
                else:
                    outs.append(self._net(self.images(c)))
        return torch.cat(outs) if outs else pixels.new_zeros(0, self.feat_mean.shape[0])

    def frame_features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) pixels -> (B, T, F) per-frame MMA outputs (zeros on padded steps), standardised as
        the regime-1 run was (identity unless ``rnn_from_run``)."""
        valid = step_mask(lengths, x.shape[1])
        pixels = x[valid]
        grad = valid & (self.training and not self.frozen and torch.is_grad_enabled())
        if bool(grad.any()) and 0 < self.train_frames:  # a random subset of each video's valid frames
            score = torch.rand(valid.shape, device=x.device).masked_fill(~valid, 2.0)
            rank = score.argsort(dim=1).argsort(dim=1)
            grad = grad & (rank < self.train_frames)
        with_grad = grad[valid]
        self.grad_frames = int(with_grad.sum())
        idx_n, idx_g = (~with_grad).nonzero()[:, 0], with_grad.nonzero()[:, 0]
        feats = torch.cat([self._run(pixels[idx_n], False), self._run(pixels[idx_g], True)])
        feats = (feats - self.feat_mean) / self.feat_std
        # row of each (video, step) in feats (valid frames in order), or the zero row for padding: plain indexing
        row = torch.full((valid.numel(),), len(feats), dtype=torch.long, device=x.device)
        row[valid.flatten().nonzero()[:, 0]] = torch.cat([idx_n, idx_g]).argsort()
        feats = torch.cat([feats, feats.new_zeros(1, feats.shape[1])])
        return feats[row].view(*valid.shape, feats.shape[1])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, lengths = fit_to_length(x, lengths, self.max_len, self.long_videos)  # the frames the RNN keeps
        return self.rnn(self.frame_features(x, lengths), lengths)

    def routing_masks(self):
        return self.rnn.routing_masks()

    def _auxiliary_loss(self) -> torch.Tensor:
        """aux_mma_weight x the MMA loss of this MMA net on the next MMA training batch (module docstring)."""
        device = self.feat_mean.device
        if self.frozen or not self.training:  # frozen: no gradient could reach the net, so draw nothing
            return torch.zeros((), device=device)
        batch = {k: v.to(device, non_blocking=True) for k, v in self.aux_data.next_batch().items()}
        x = self.mma.normalize(batch["image"])
        if x.is_cuda:
            if not self._channels_last:
                self.mma.to(memory_format=torch.channels_last)
                self._channels_last = True
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            out = self.mma(x)
        loss, _ = self.aux_data.loss.to(device)({k: v.float() for k, v in out.items()}, batch)
        return self.aux_mma_weight * loss


BATCHNORM = ("batch", "frozen", "auto")  # the ``batchnorm`` option (module docstring)


def _batchnorm_layers(net: nn.Module, eval_mode: bool) -> list:
    """Put the net's BatchNorm layers that are in the other mode into eval (running statistics, none
    updated) or training mode; -> the layers switched."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training == eval_mode]
    for m in bns:
        m.train(not eval_mode)
    return bns


@contextlib.contextmanager
def _batchnorm_eval(net: nn.Module):
    """The net's BatchNorm layers in eval mode (running statistics, none updated) inside the block."""
    bns = _batchnorm_layers(net, eval_mode=True)
    try:
        yield
    finally:
        for m in bns:
            m.train()


# ------------------------------------------------------------------ the MMA loss as an auxiliary term
def _auxiliary(path: str, crop_size: int, batch_size: int | None):
    """`eri.mma.auxiliary.MMAAuxiliary` (the MMA images and loss), imported by name at first use, like the
    registries' lazy targets: eri.mma builds on eri.models and eri.training, never the reverse at import."""
    return importlib.import_module("eri.mma.auxiliary").MMAAuxiliary(path, crop_size, batch_size)


def _check_aux(mma: nn.Module, weight, config, batch_size) -> float:
    """The auxiliary options, all problems in one line; -> the weight (0.0: off)."""
    bad = []
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight < math.inf:
        bad.append(f"aux_mma_weight must be a number >= 0 (got {weight!r})")
    elif weight > 0 and not config:
        bad.append("aux_mma_config (a tools/train_mma.py config naming the MMA images, e.g. configs/mma/demo.yaml) "
                    "is required when aux_mma_weight > 0")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        bad.append(f"aux_mma_batch_size must be null or an integer >= 1 (got {batch_size!r})")
    heads = [h for h in ("va_head", "expr_head", "au_head") if not isinstance(getattr(mma, h, None), nn.Module)]
    if not bad and weight and heads:
        bad.append(f"aux_mma_weight > 0 needs the MMA net's affect heads, and it has no {heads}")
    if bad:
        raise ConfigError("encoder mma_rnn: " + "; ".join(bad))
    return float(weight)


def takes_crops(encoder: dict) -> bool:
    """Whether a branch's encoder config names an encoder that reads a face-crop stream."""
    name = encoder.get("name") if isinstance(encoder, dict) else None
    return name in ENCODERS and bool(getattr(ENCODERS.resolve(name), "takes_crops", False))


def check_crop_config(branches: list, standardize: bool) -> None:
    if standardize and any(takes_crops(dict(b["encoder"])) for b in branches):
        raise ConfigError("data.standardize: a branch reads face crops (encoder mma_rnn): z-scoring pixels is "
                          "meaningless; set data.standardize=false (configs/mma_mrnnet_e2e.yaml does)")
