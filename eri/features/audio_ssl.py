"""`audio_ssl`: self-supervised speech embeddings (wav2vec 2.0, HuBERT, WavLM) from a local model directory.

Several ABAW5 ERI teams replaced MFCCs with wav2vec 2.0 / HuBERT features. The model is whatever
``transformers.AutoModel`` loads from ``model_dir`` (``local_files_only``: nothing is downloaded); get
one on a machine with network, e.g. ``hf download facebook/wav2vec2-base --local-dir checkpoints/wav2vec2-base``
(or ``facebook/hubert-base-ls960``), and copy the folder over.

Choices (the teams' papers differ; ours, written out):
- Input normalisation: zero mean, unit variance over the whole waveform (``(x - mean) / sqrt(var + 1e-7)``,
  as ``Wav2Vec2FeatureExtractor``) when the directory's ``preprocessor_config.json`` says
  ``do_normalize``; ``normalize: true|false`` overrides it, and is required when that file is missing.
- ``layer: mean`` averages the outputs of all transformer layers (``hidden_states[1:]``); an integer
  picks one entry of ``hidden_states`` (0 = the input to the first layer, -1 = the last layer).
- Long audio is cut into ``chunk_seconds`` pieces encoded independently (attention cost grows with
  the square of the length); a last piece shorter than the model's receptive field (400 samples
  for wav2vec2-base) is dropped. Hume-Reaction videos (<= 15 s) fit in one piece.
- Trust: a model folder is data, never code. A ``config.json`` whose ``auto_map`` names custom code
  is refused (transformers would offer to run it; eri passes ``trust_remote_code=False`` and never
  prompts), and so is a pickled ``*.bin`` that ``torch.load(weights_only=True)`` will not load (loaded
  through `eri.io.load_torch` first); ``*.safetensors`` weights are used when present.
- Steps: the model's own frames (stride 320 samples = 50 Hz for the base models), timestamped at the
  centre of each frame's receptive field; or, with ``rate``, frame means over windows of 1 / rate s
  (window k holds the frames centred in [k / rate, (k + 1) / rate), timestamped at its centre).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from eri.errors import UnsafeFileError, WeightsError
from eri.features.base import Extractor
from eri.io import load_torch

SAMPLE_RATE = 16000
HOW_TO_GET = (
    "get one on a machine with network, e.g. `hf download facebook/wav2vec2-base --local-dir DIR` "
    "(or facebook/hubert-base-ls960), and copy DIR here"
)


class SSLAudioExtractor(Extractor):
    """16 kHz mono waveform -> ``(features (T, hidden) float32, timestamps (T,) s)``."""

    name = "audio_ssl"
    kind = "audio"
    dim = 0  # the model's hidden size, set when it is loaded
    rate = 50.0  # steps per second of wav2vec 2.0 / HuBERT frames; set from the model and `rate` when it is loaded

    def __init__(
        self,
        model_dir: str,
        layer: int | str = "mean",
        rate: float | None = None,
        normalize: bool | None = None,
        chunk_seconds: float = 30.0,
        batch_size: int = 8,
        device: str = "cpu",
    ):
        super().__init__(
            model_dir=model_dir,
            layer=layer,
            rate=rate,
            normalize=normalize,
            chunk_seconds=chunk_seconds,
            batch_size=batch_size,
            device=device,
        )
        from transformers import AutoModel

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise WeightsError(f"audio_ssl: no model in {path} (config.json missing); {HOW_TO_GET}")
        safetensors = check_model_dir(path)
        if normalize is None:
            pre = path / "preprocessor_config.json"
            if not pre.is_file():
                raise WeightsError(
                    f"audio_ssl: {pre} is missing; set `normalize: true|false` in the extractor "
                    "config (wav2vec2-base: true)"
                )
            pre_cfg = json.loads(pre.read_text())
            if pre_cfg.get("sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
                raise ValueError(
                    f"audio_ssl: {pre} expects {pre_cfg['sampling_rate']} Hz audio, the pipeline gives 16 kHz"
                )
            normalize = bool(pre_cfg.get("do_normalize", False))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        try:
            model = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                              use_safetensors=safetensors or None)
        except Exception as e:  # noqa: BLE001 - an unknown model_type, missing or misshapen weights: one line
            raise WeightsError(
                f"audio_ssl: cannot load the model in {path} ({type(e).__name__}: {e}); {HOW_TO_GET}"
            ) from None
        self.model = model.to(self.device).eval()
        cfg = self.model.config
        n_states = cfg.num_hidden_layers + 1
        if layer != "mean" and not (isinstance(layer, int) and -n_states <= layer < n_states):
            raise ValueError(
                f"audio_ssl: layer must be 'mean' or an integer in [{-n_states}, {n_states - 1}], got {layer!r}"
            )
        self.path, self.layer, self.normalize = path, layer, bool(normalize)
        self.dim = int(cfg.hidden_size)
        self.stride = math.prod(cfg.conv_stride)
        self.receptive = 1 + sum((k - 1) * math.prod(cfg.conv_stride[:i]) for i, k in enumerate(cfg.conv_kernel))
        self.frame_rate = SAMPLE_RATE / self.stride
        if rate is not None and not 0 < rate <= self.frame_rate:
            raise ValueError(
                f"audio_ssl: rate must be in (0, {self.frame_rate}] steps/s (the model's frame rate), got {rate}"
            )
        self.pool_rate = rate
        self.rate = float(rate or self.frame_rate)
        self.chunk = max(int(chunk_seconds * SAMPLE_RATE), self.receptive)
        self.batch_size = int(batch_size)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) equal-length pieces -> (B, frames, hidden)."""
        states = self.model(x, output_hidden_states=True).hidden_states
        if self.layer == "mean":
            return torch.stack(states[1:]).mean(0)
        return states[self.layer]

    @torch.inference_mode()
    def __call__(self, waveform) -> tuple[np.ndarray, np.ndarray]:
        w = np.asarray(waveform)
        if w.ndim != 1 or not np.isfinite(w).all():
            raise ValueError(f"audio_ssl: expected a finite mono waveform (n_samples,), got shape {w.shape}")
        x = torch.from_numpy(w.astype(np.float32)).to(self.device)
        if self.normalize and len(x):
            x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        n_full, rest = divmod(len(x), self.chunk)
        feats, starts = [], []  # per piece: (frames, hidden) and its first sample
        if n_full:
            pieces = x[: n_full * self.chunk].view(n_full, self.chunk)
            out = torch.cat([self._encode(b) for b in pieces.split(self.batch_size)])
            feats += list(out)
            starts += [i * self.chunk for i in range(n_full)]
        if rest >= self.receptive:
            feats.append(self._encode(x[n_full * self.chunk :][None])[0])
            starts.append(n_full * self.chunk)
        if not feats:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        centre = self.receptive / 2
        times = torch.cat(
            [
                (s + torch.arange(len(f), device=self.device) * self.stride + centre) / SAMPLE_RATE
                for s, f in zip(starts, feats)
            ]
        )
        feats = torch.cat(feats).float()
        if self.pool_rate is not None:
            feats, times = pool_to_rate(feats, times, self.pool_rate)
        return feats.cpu().numpy(), times.float().cpu().numpy()

    def metadata(self) -> dict:
        cfg = self.model.config
        return {
            "model_dir": str(self.path),
            "model_type": cfg.model_type,
            "hidden_size": self.dim,
            "num_hidden_layers": cfg.num_hidden_layers,
            "normalize": self.normalize,
        }


def check_model_dir(path: Path) -> bool:
    """Refuse a model folder that would run code: ``auto_map`` (custom modelling code) in its JSON
    configs, or a ``*.bin`` pickle that weights_only refuses (checked only when no ``*.safetensors``
    is there, as transformers then loads the ``.bin``). Returns whether safetensors weights exist."""
    for name in ("config.json", "preprocessor_config.json"):
        f = path / name
        if not f.is_file():
            continue
        try:
            cfg = json.loads(f.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise WeightsError(f"audio_ssl: {f} is damaged ({type(e).__name__}: {e})") from None
        if not isinstance(cfg, dict):
            raise WeightsError(f"audio_ssl: {f} is not a JSON object")
        if "auto_map" in cfg:
            raise UnsafeFileError(
                f"audio_ssl: {f} refused as unsafe: its auto_map names custom code "
                f"({sorted(map(str, cfg['auto_map']))}) "
                "that transformers would run; eri never runs code from a model folder (trust_remote_code=False): "
                "use a standard wav2vec 2.0 / HuBERT / WavLM folder"
            )
    if any(path.glob("*.safetensors")):
        return True
    for f in sorted(path.glob("*.bin")):
        try:
            load_torch(f, "audio_ssl weights")
        except UnsafeFileError as e:
            raise UnsafeFileError(f"{e}; prefer the model's model.safetensors (hf download fetches it)") from None
    return False


def pool_to_rate(feats: torch.Tensor, times: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the frames whose time falls in each 1 / rate window; empty windows are left out."""
    bins = torch.floor(times * rate).long()
    n = int(bins.max()) + 1
    sums = torch.zeros(n, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add_(0, bins, feats)
    counts = torch.bincount(bins, minlength=n)
    keep = counts > 0
    centres = (torch.arange(n, device=feats.device, dtype=torch.float64) + 0.5) / rate
    return sums[keep] / counts[keep, None].to(feats.dtype), centres[keep]
