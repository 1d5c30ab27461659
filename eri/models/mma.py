"""MMA (paper 000, section 3.1): a residual CNN, one shared embedding, three affect heads.

    aligned face crop -> backbone (ResNet18 / ResNet50 / small residual net) -> pooled feature (D)
      -> shared embedding (FC + BN + ReLU) -> valence-arousal (2, tanh)
                                           -> expression (7 logits, softmax; order EXPRESSIONS)
                                           -> AU (17 logits, sigmoid; order AU_IDS, DESIGN.md)

``MMANet.outputs26`` is the 26-d ``mma`` stream, ``MMANet.backbone_features`` the 512-d ``holistic``
stream (paper 004's AffectNet ResNet18 penultimate layer). Normalisation lives in the model
(``preprocess`` / ``normalize``) so training and extraction cannot disagree about it, and the
checkpoint written by ``tools/train_mma.py`` carries the architecture spec: ``load_mma(path)``
rebuilds the net with no conversion step.

Pretrained ImageNet weights are never downloaded: ``pretrained`` is a path to a torchvision
state-dict file the user placed, or ``None`` (random init).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# One source of truth for the label spaces: the synthetic Hume generator already writes the mma
# stream in these orders. Expressions follow Aff-Wild2's order; AUs the MMA head's 17.
from eri.constants import AU_IDS, EXPRESSION_AUS, EXPRESSIONS  # noqa: F401  (re-exported)
from eri.errors import CheckpointError, ConfigError, WeightsError
from eri.io import load_torch
from eri.registry import Registry


def expression_au_table() -> torch.Tensor:
    """(7, 17) 0/1: AU k belongs to expression e (prototypical or observational, DESIGN.md)."""
    table = torch.zeros(len(EXPRESSIONS), len(AU_IDS))
    for e, name in enumerate(EXPRESSIONS):
        for au in EXPRESSION_AUS[name]:
            table[e, AU_IDS.index(au)] = 1.0
    return table


# ---------------------------------------------------------------------------------------------- backbones
BACKBONES = Registry("backbone")  # config `model.backbone`; (**config) -> module with .out_dim


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.skip(x))


@BACKBONES.register("small_resnet")
class SmallResNet(nn.Module):
    """A few residual stages for CPU work on small crops (the generated data, tests)."""

    def __init__(self, widths: tuple = (16, 32, 64), blocks: int = 1):
        super().__init__()
        layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        cin = widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if (b == 0 and i > 0) else 1))
                cin = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = cin

    def forward(self, x):
        return self.body(x)


@BACKBONES.register("resnet18", description="torchvision ResNet18 without its classifier: pooled 512-d (paper 000)")
class TorchvisionResNet(nn.Module):
    """torchvision ResNet without its classifier: (N, 3, S, S) -> pooled (N, 512 | 2048)."""

    depth = 18

    def __init__(self, pretrained: str | None = None):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, f"resnet{self.depth}")(weights=None)
        if pretrained:
            path = Path(pretrained)
            if not path.exists():
                raise WeightsError(
                    f"pretrained backbone weights {path} not found; put a torchvision resnet{self.depth} state dict "
                    f"there (e.g. torchvision.models.resnet{self.depth}(weights='DEFAULT').state_dict() saved with "
                    "torch.save on a machine with network), or set pretrained: null for random init"
                )
            state = load_torch(path, f"resnet{self.depth} backbone weights")
            if not isinstance(state, dict):
                raise CheckpointError(f"{path}: not a state dict")
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or [k for k in missing if not k.startswith("fc.")]:
                raise CheckpointError(
                    f"{path}: not a resnet{self.depth} state dict (missing {missing[:5]}, unexpected {unexpected[:5]})"
                )
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x):
        return self.net(x)


@BACKBONES.register("resnet50", description="torchvision ResNet50 without its classifier: pooled 2048-d")
class ResNet50(TorchvisionResNet):
    depth = 50


# ------------------------------------------------------------------------------------------------- model
class MMANet(nn.Module):
    """Residual CNN + shared embedding + VA / expression / AU heads (see module docstring)."""

    def __init__(
        self,
        backbone: nn.Module,
        crop_size: int = 224,
        embed_dim: int = 256,
        dropout: float = 0.0,
        mean: tuple = (0.485, 0.456, 0.406),
        std: tuple = (0.229, 0.224, 0.225),
    ):
        super().__init__()
        self.backbone = backbone
        self.crop_size = int(crop_size)
        self.embed = nn.Sequential(
            nn.Linear(backbone.out_dim, embed_dim), nn.BatchNorm1d(embed_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.va_head = nn.Linear(embed_dim, 2)
        self.expr_head = nn.Linear(embed_dim, len(EXPRESSIONS))
        self.au_head = nn.Linear(embed_dim, len(AU_IDS))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ inputs
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) at ``crop_size`` -> normalised float; what training feeds the net."""
        return (x.float() / 255.0 - self.mean) / self.std

    def preprocess(self, crops) -> torch.Tensor:
        """Aligned crops, uint8 (N, S, S, 3) RGB (numpy or tensor) -> float (N, 3, crop_size, crop_size).

        Resizing is bilinear with antialias on the uint8 image, rounded back to uint8 first, exactly
        as the training data pipeline resizes (``eri.mma.data``), so a crop gives the same input here
        and in training."""
        x = torch.as_tensor(crops)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"MMANet.preprocess expects uint8 (N, S, S, 3) RGB crops, got {tuple(x.shape)} {x.dtype}")
        x = resize_uint8(x.permute(0, 3, 1, 2), self.crop_size)
        return self.normalize(x.to(self.mean.device))

    # ----------------------------------------------------------------- outputs
    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone output (N, D): the ``holistic`` stream (512 for resnet18)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised (N, 3, S, S) -> {"va": (N, 2) in [-1, 1], "expr": (N, 7) logits, "au": (N, 17) logits}."""
        h = self.embed(self.backbone(x))
        return {"va": torch.tanh(self.va_head(h)), "expr": self.expr_head(h), "au": self.au_head(h)}

    def outputs26(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 26) = [valence, arousal, 7 expression probs, 17 AU probs]: the ``mma`` stream."""
        out = self(x)
        return torch.cat([out["va"], out["expr"].softmax(-1), out["au"].sigmoid()], dim=-1)


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size); a no-op at the right size."""
    if x.shape[-2:] == (size, size):
        return x
    import torchvision.transforms.v2.functional as TF

    return TF.resize(x, [size, size], antialias=True)


MODEL_KEYS = ("backbone", "crop_size", "embed_dim", "dropout", "mean", "std")


def create_mma(spec: dict) -> MMANet:
    """Build from a config dict: ``{backbone: {name, ...}, crop_size, embed_dim, dropout, mean, std}``."""
    spec = dict(spec)
    unknown = sorted(set(spec) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in model; valid keys: {list(MODEL_KEYS)}")
    if "backbone" not in spec:
        raise ConfigError(f"model.backbone is required; valid backbones: {sorted(BACKBONES)}")
    backbone_spec = dict(spec.pop("backbone"))
    if "widths" in backbone_spec:
        backbone_spec["widths"] = tuple(backbone_spec["widths"])
    backbone = BACKBONES.build(backbone_spec)
    for k in ("mean", "std"):
        if k in spec:
            spec[k] = tuple(spec[k])
    return MMANet(backbone, **spec)


CHECKPOINT_KEY = "mma_model"  # the architecture spec inside a train_mma checkpoint


def read_mma_checkpoint(path, map_location="cpu") -> tuple[dict, dict]:
    """A ``tools/train_mma.py`` checkpoint -> (its architecture spec without the backbone's ``pretrained``
    file, which the trained weights replace; the checkpoint). WeightsError / CheckpointError in one line."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(
            f"MMA checkpoint {path} not found; train one with `python tools/train_mma.py --config configs/mma/<name>.yaml` "
            "(it writes runs/<name>/checkpoints/best-*.ckpt)"
        )
    ckpt = load_torch(path, "MMA checkpoint", map_location)
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a train_mma checkpoint (no '{CHECKPOINT_KEY}' architecture spec / 'state_dict')")
    spec = dict(ckpt[CHECKPOINT_KEY])
    spec["backbone"] = {k: v for k, v in spec["backbone"].items() if k != "pretrained"}
    return spec, ckpt


def load_mma(path, map_location="cpu") -> MMANet:
    """A ``tools/train_mma.py`` checkpoint (best-*.ckpt / last.ckpt) -> MMANet in eval mode.

    The architecture is rebuilt from the spec the checkpoint carries (``mma_model``); a backbone's
    ``pretrained`` file is not needed again (the trained weights replace it)."""
    spec, ckpt = read_mma_checkpoint(path, map_location)
    model = create_mma(spec)
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its weights do not fit its own architecture spec ({e})") from None
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
