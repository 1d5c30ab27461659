"""`audio`: paper 004's MFCC tokens, with librosa (the paper's tool) or an equal torchaudio version.

Paper 004 (sec. 4.2): 32 MFCCs from ~30 ms frames at 16 kHz with a ~16 ms stride (librosa), 32
adjacent frames combined into one 1024-d vector. Our reading, written out:
- MFCC: ``librosa.feature.mfcc`` with n_fft = win = 480 (30 ms), hop 256 (16 ms), periodic Hann
  window, centred frames with zero padding, power spectrum, 128 Slaney mel bands 0-8 kHz (Slaney
  normalisation), ``power_to_db`` (ref 1, amin 1e-10, top_db 80 below the waveform's maximum), DCT-II
  (orthonormal), first 32 coefficients. All but the window/hop/32 are librosa's defaults, spelled
  out so a librosa default change cannot move the numbers.
- Tokens: non-overlapping groups of 32 consecutive MFCC frames (a remainder under 32 frames is
  dropped), flattened **frame-major**: ``token.reshape(32 frames, 32 coefficients)`` gives back the
  MFCC matrix, i.e. entries 0-31 are the first frame's 32 coefficients. 16000 / 256 / 32 = 1.95
  tokens per second (`eri.constants.CATALOGUE`). A waveform shorter than 31 * 256 = 7,936 samples
  (0.5 s) has fewer than 32 frames and gives 0 tokens; the pipeline records that video as audio-less.
- Timestamps: the centre of each token, the mean of its frames' centres ``(32 k + 15.5) * 256 / 16000`` s
  (with centred frames, frame t is centred on sample t * hop).

``backend: torchaudio`` computes the same numbers batched over several waveforms (``batch``) on CPU
or CUDA: torchaudio's ``MelSpectrogram`` with the settings above, then dB and top_db clipping per
waveform over its own frames only (torchaudio's ``AmplitudeToDB`` would clip a batch against its
common maximum), then the same DCT. It equals librosa within `TORCH_TOLERANCE` (absolute, in MFCC
units; c0 spans hundreds): float32 FFT and mel-matrix rounding differ between the two, and a few dB
steps near the -80 dB floor magnify the difference for near-silent bins.
"""

from __future__ import annotations

import numpy as np
import torch

from eri.features.base import Extractor

SAMPLE_RATE = 16000
TORCH_TOLERANCE = 0.01  # max |torchaudio - librosa| per MFCC value; 1.3e-3 measured (real audio, tones, silence)


def _check_waveform(w) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 1:
        raise ValueError(f"audio: expected a mono waveform (n_samples,), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("audio: waveform has non-finite samples (NaN/inf)")
    return w.astype(np.float32, copy=False)


def stack_tokens(mfcc: np.ndarray, frames_per_token: int) -> np.ndarray:
    """(T, C) MFCC frames -> (T // k, k * C) tokens, frame-major, remainder dropped."""
    n = len(mfcc) // frames_per_token
    return mfcc[: n * frames_per_token].reshape(n, frames_per_token * mfcc.shape[1])


class MFCCExtractor(Extractor):
    """16 kHz mono waveform -> ``(tokens (T, n_mfcc * frames_per_token) float32, timestamps (T,) s)``.

    ``backend``: ``librosa`` (the paper's) or ``torchaudio`` (batched, ``device`` cpu/cuda/auto).
    """

    name = "audio"
    kind = "audio"
    dim = 1024  # with the default config: n_mfcc x frames_per_token
    rate = SAMPLE_RATE / 256 / 32  # tokens per second with the default config: 16 kHz / hop / frames_per_token

    def __init__(
        self,
        backend: str = "librosa",
        n_mfcc: int = 32,
        n_fft: int = 480,
        hop_length: int = 256,
        n_mels: int = 128,
        frames_per_token: int = 32,
        top_db: float = 80.0,
        device: str = "cpu",
    ):
        super().__init__(
            backend=backend,
            n_mfcc=n_mfcc,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            frames_per_token=frames_per_token,
            top_db=top_db,
            device=device,
        )
        if backend not in ("librosa", "torchaudio"):
            raise ValueError(f"audio: unknown backend {backend!r}; valid: ['librosa', 'torchaudio']")
        if min(n_mfcc, n_fft, hop_length, n_mels, frames_per_token) < 1 or n_mfcc > n_mels:
            raise ValueError(f"audio: sizes must be positive and n_mfcc <= n_mels, got {self.config}")
        self.backend, self.n_mfcc, self.n_fft, self.hop = backend, int(n_mfcc), int(n_fft), int(hop_length)
        self.n_mels, self.k, self.top_db = int(n_mels), int(frames_per_token), float(top_db)
        self.dim = self.n_mfcc * self.k
        self.rate = SAMPLE_RATE / self.hop / self.k
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self._mel = self._dct = None

    # ------------------------------------------------------------------ MFCC frames
    def mfcc_librosa(self, y: np.ndarray) -> np.ndarray:
        """(n,) -> (1 + n // hop, n_mfcc) float32."""
        import librosa

        mel = librosa.feature.melspectrogram(
            y=y,
            sr=SAMPLE_RATE,
            n_fft=self.n_fft,
            win_length=self.n_fft,
            hop_length=self.hop,
            window="hann",
            center=True,
            pad_mode="constant",
            power=2.0,
            n_mels=self.n_mels,
            fmin=0.0,
            fmax=SAMPLE_RATE / 2,
            htk=False,
            norm="slaney",
        )
        db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=self.top_db)
        m = librosa.feature.mfcc(S=db, n_mfcc=self.n_mfcc, dct_type=2, norm="ortho", lifter=0)
        return np.ascontiguousarray(m.T, dtype=np.float32)

    def _modules(self):
        if self._mel is None:
            import torchaudio

            self._mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=SAMPLE_RATE,
                n_fft=self.n_fft,
                win_length=self.n_fft,
                hop_length=self.hop,
                f_min=0.0,
                f_max=SAMPLE_RATE / 2,
                n_mels=self.n_mels,
                window_fn=torch.hann_window,
                power=2.0,
                center=True,
                pad_mode="constant",
                norm="slaney",
                mel_scale="slaney",
            ).to(self.device)
            self._dct = torchaudio.functional.create_dct(self.n_mfcc, self.n_mels, norm="ortho").to(self.device)
        return self._mel, self._dct

    @torch.inference_mode()
    def mfcc_torch(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero-padded (B, L) + true lengths (B,) -> (B, 1 + L // hop, n_mfcc); frames past an item's
        ``1 + length // hop`` are padding. Padding with zeros is exact: librosa pads with zeros too."""
        mel, dct = self._modules()
        db = 10.0 * torch.log10(mel(waves).clamp_min(1e-10))  # (B, n_mels, T), power_to_db with ref 1
        frames = torch.arange(db.shape[-1], device=db.device) < (1 + lengths // self.hop)[:, None]
        peak = db.masked_fill(~frames[:, None, :], float("-inf")).amax(dim=(1, 2))
        db = torch.maximum(db, (peak - self.top_db)[:, None, None])
        return torch.einsum("bmt,mc->btc", db, dct)

    # ------------------------------------------------------------------ tokens
    def token_times(self, n_tokens: int) -> np.ndarray:
        return ((np.arange(n_tokens) * self.k + (self.k - 1) / 2) * self.hop / SAMPLE_RATE).astype(np.float32)

    def __call__(self, waveform) -> tuple[np.ndarray, np.ndarray]:
        return self.batch([waveform])[0]

    def batch(self, waveforms) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several waveforms at once (one padded batch with the torchaudio backend)."""
        waves = [_check_waveform(w) for w in waveforms]
        if not waves:
            return []
        if self.backend == "librosa":
            mfccs = [self.mfcc_librosa(w) if len(w) else np.zeros((0, self.n_mfcc), np.float32) for w in waves]
        else:
            lengths = torch.tensor([len(w) for w in waves])
            padded = torch.zeros(len(waves), max(1, int(lengths.max())))
            for i, w in enumerate(waves):  # copy into the padded batch (no compute per item)
                padded[i, : len(w)] = torch.from_numpy(w)
            out = self.mfcc_torch(padded.to(self.device), lengths.to(self.device)).float().cpu().numpy()
            mfccs = [out[i, : (1 + n // self.hop) if n else 0] for i, n in enumerate(lengths.tolist())]
        results = []
        for m in mfccs:
            tokens = np.ascontiguousarray(stack_tokens(m, self.k), dtype=np.float32)
            results.append((tokens, self.token_times(len(tokens))))
        return results

    def metadata(self) -> dict:
        import importlib.metadata as md

        meta = {
            "sample_rate": SAMPLE_RATE,
            "layout": f"{self.k} frames x {self.n_mfcc} MFCCs, frame-major",
            "backend_version": md.version(self.backend),
        }
        if self.backend == "torchaudio":
            meta["tolerance_vs_librosa"] = TORCH_TOLERANCE
        return meta
