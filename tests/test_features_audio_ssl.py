"""audio_ssl: a tiny randomly initialised wav2vec 2.0 saved to disk and loaded back, checked against
the same transformers model called directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eri.errors import ConfigError
from eri.features.audio_ssl import SSLAudioExtractor
from eri.registry import build


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    path = tmp_path_factory.mktemp("w2v")
    Wav2Vec2Model(cfg).eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(path)
    return path


def wave(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)


def reference(path, w: np.ndarray):
    """The saved model called directly on a normalised waveform: all hidden states."""
    from transformers import AutoModel

    m = AutoModel.from_pretrained(path).eval()
    x = torch.from_numpy((w - w.mean()) / np.sqrt(w.var() + 1e-7))[None]
    with torch.no_grad():
        return m(x, output_hidden_states=True).hidden_states


def test_layers_and_timestamps_match_the_model(model_dir):
    w = wave(2.0)
    states = reference(model_dir, w)
    last = SSLAudioExtractor(model_dir=str(model_dir), layer=-1)
    feats, times = last(w)
    assert feats.shape == (99, 32) and feats.dtype == np.float32  # (32000 - 400) // 320 + 1 frames at 50 Hz
    np.testing.assert_allclose(feats, states[-1][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.diff(times), 0.02, atol=1e-6)
    assert times[0] == pytest.approx(200 / 16000)  # centre of the first 400-sample receptive field
    mean, _ = SSLAudioExtractor(model_dir=str(model_dir))(w)
    np.testing.assert_allclose(mean, torch.stack(states[1:]).mean(0)[0].numpy(), atol=1e-5)
    assert last.dim == 32 and last.rate == 50.0 and last.metadata()["normalize"] is True


def test_chunks_pooling_and_short_audio(model_dir):
    w = wave(2.3, seed=1)
    ext = SSLAudioExtractor(model_dir=str(model_dir), layer=-1, chunk_seconds=1.0, batch_size=1)
    feats, times = ext(w)
    assert feats.shape == (49 + 49 + 14, 32) and np.all(np.diff(times) > 0)  # 2 full 1 s pieces + 0.3 s rest
    assert times[49] == pytest.approx(1.0 + 200 / 16000)
    # batching the full pieces does not change them
    batched = SSLAudioExtractor(model_dir=str(model_dir), layer=-1, chunk_seconds=1.0)
    np.testing.assert_allclose(batched(w)[0], feats, atol=1e-5)

    pooled = SSLAudioExtractor(model_dir=str(model_dir), layer=-1, chunk_seconds=1.0, rate=2.0)
    p, pt = pooled(w)
    np.testing.assert_allclose(pt, [0.25, 0.75, 1.25, 1.75, 2.25])
    assert pooled.rate == 2.0
    np.testing.assert_allclose(p[0], feats[times < 0.5].mean(0), atol=1e-5)
    np.testing.assert_allclose(p[4], feats[times >= 2.0].mean(0), atol=1e-5)

    empty, t0 = ext(np.zeros(399, np.float32))  # under one receptive field
    assert empty.shape == (0, 32) and t0.shape == (0,)


def test_errors_name_the_problem(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*hf download"):
        SSLAudioExtractor(model_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="layer"):
        SSLAudioExtractor(model_dir=str(model_dir), layer=7)
    with pytest.raises(ValueError, match="rate"):
        SSLAudioExtractor(model_dir=str(model_dir), rate=100.0)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['layers'\].*'layer'"):
        build({"audio_ssl": SSLAudioExtractor}, "extractor", {"name": "audio_ssl", "model_dir": model_dir, "layers": 1})
