"""Warnings where a result would silently be meaningless: features from a randomly initialised
network (extraction, training, prediction), a stream that cannot tell videos apart, and a scored
split too small for its PCC to mean anything."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import make_random_dataset
from test_bad_inputs import tone_video

from eri.data.datamodule import ERIDataModule
from eri.data.store import FeatureStore, unlearned
from eri.errors import EXIT_OK
from eri.inference.predictor import Predictor
from eri.models.spec import ModelSpec
from tools.extract import main as extract_main

RANDOM = "was extracted with a randomly initialised ResNet18: its features carry no learned information"


def _dm(root, specs=("mma",), **kw) -> ERIDataModule:
    dm = ERIDataModule(root, list(specs), progress=False, min_valid_frames=5, **kw)
    dm.setup("fit")
    return dm


def _messages(record) -> list[str]:
    return [str(w.message) for w in record]


def test_random_weights_warn_at_extraction_training_and_prediction(tmp_path, capsys):
    root = tmp_path / "videos"
    tone_video(root / "a.mp4", frames=6)
    cfg = tmp_path / "holistic.yaml"
    cfg.write_text("device: cpu\nfaces: {crop_size: 112}\nextractors:\n  - {name: holistic, config: {random_init: true}}\n")
    assert extract_main(["--config", str(cfg), "--data-root", str(root), "--no-progress"]) == EXIT_OK
    err = capsys.readouterr().err
    assert f"warning: stream 'holistic' {RANDOM}; give the extractor `weights:`" in err
    meta = FeatureStore(root).meta("holistic")
    assert meta["random_init"] is True and unlearned("holistic", meta).startswith("stream 'holistic' was")

    # the model file carries the stream's meta: prediction warns too
    spec = ModelSpec(branches=[{"name": "h", "streams": ["holistic"], "encoder": {"name": "mean_pool", "hidden": 4}}],
                     fusion={"name": "concat"}, stream_dims={"holistic": 512}, stats=None,
                     policy={"drop_invalid_frames": True, "min_valid_frames": 1, "frame_stride": 1},
                     train_mean=[0.5] * 7, streams={"holistic": meta})
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=f"model.ckpt: stream 'holistic' {RANDOM}"):
        Predictor(spec.build(), spec, "model.ckpt").predict([root / "a.mp4"], tmp_path / "pred", progress=False)


def test_random_weights_warn_at_training_data_setup(tmp_path):
    root = make_random_dataset(tmp_path / "ds")
    path = root / "features" / "mma" / "meta.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "random_init": True,
                                "backbone": "torchvision resnet18, fc removed"}))
    with pytest.warns(UserWarning, match=f"stream 'mma' {RANDOM}"):
        _dm(root)


def test_learned_weights_do_not_warn(random_root):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _dm(random_root, ("mma", "au[0:17]"))
    assert not [m for m in _messages(record) if "randomly initialised" in m or "stream '" in m]


def _rewrite(root, stream: str, make) -> None:
    """Every file of ``stream`` replaced by ``make(T)`` features (same T, validity and timestamps)."""
    fs = FeatureStore(root)
    for vid in fs.index(stream)["File_ID"]:
        f, v, t = fs.load(stream, vid, with_times=True)
        fs.write(stream, vid, make(len(f), f.shape[1]).astype(np.float16), v, t)


def test_a_constant_stream_warns_naming_it(tmp_path):
    root = make_random_dataset(tmp_path / "ds")
    _rewrite(root, "mma", lambda n, d: np.full((n, d), 0.25))
    with pytest.warns(UserWarning, match="stream 'mma' is constant: every column has one value"):
        _dm(root, ("mma", "au"))


def test_a_stream_identical_in_every_video_warns(tmp_path):
    root = make_random_dataset(tmp_path / "ds")
    pattern = np.random.default_rng(1).normal(size=(2, 26))  # varies in time, not between videos
    fs = FeatureStore(root)
    for vid in fs.index("mma")["File_ID"]:
        f, v, t = fs.load("mma", vid, with_times=True)
        k = len(f) // 2 * 2  # even lengths: every video has exactly the same mean and spread
        fs.write("mma", vid, np.resize(pattern, (k, 26)).astype(np.float16), v[:k], t[:k])
    with pytest.warns(UserWarning, match="stream 'mma' has the same values in every training video"):
        _dm(root)


def test_small_scored_splits_warn_and_twenty_videos_do_not(tmp_path, random_root):
    with pytest.warns(UserWarning, match="the val split has 6 videos: its PCC and 95% interval are meaningless"):
        _dm(random_root)
    root = make_random_dataset(tmp_path / "big", n=(4, 20, 20))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _dm(root)
    assert not [m for m in _messages(record) if "meaningless" in m]
