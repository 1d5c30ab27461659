"""The synthetic dataset: layout, dtypes, label statistics, determinism, resuming, ensure_synthetic."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from eri.constants import EMOTIONS, STREAMS
from eri.data.store import FeatureStore
from eri.data.synthetic import (
    KNOB_DOCS,
    PRESETS,
    ensure_synthetic,
    generate,
    knob_hash,
    label_stats,
    mean_pearson,
    proxy_scores,
    resolve_preset,
    sample_labels,
)

STREAM_NAMES = ("holistic", "au", "mma", "audio")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "tiny"
    summary = generate(root, "tiny", seed=0, progress=False)
    return root, summary


def _arrays(root, stream, vid):
    with np.load(root / "features" / stream / f"{vid}.npz") as z:
        return {k: z[k].copy() for k in z.files}


# ------------------------------------------------------------------------------------------ presets
def test_presets_and_knobs():
    assert {"tiny", "hume-small", "hume-full"} <= set(PRESETS)
    full = PRESETS["hume-full"]
    assert (full["n_train"], full["n_val"], full["n_test"]) == (15806, 4657, 4604)
    small = PRESETS["hume-small"]
    assert (small["n_train"], small["n_val"], small["n_test"]) == (1600, 500, 500)
    for p in PRESETS.values():
        assert set(p) == set(KNOB_DOCS)
    with pytest.raises(ValueError, match="hume-small"):
        resolve_preset("nope")
    with pytest.raises(ValueError, match="n_train"):
        generate("/nonexistent/never", "tiny", not_a_knob=1)
    assert knob_hash(PRESETS["tiny"], 0) != knob_hash(PRESETS["tiny"], 1)


# ------------------------------------------------------------------------------------------- layout
def test_data_info_layout(tiny):
    root, _ = tiny
    info = pd.read_csv(root / "data_info.csv", dtype={"File_ID": str})
    assert list(info.columns) == ["File_ID", "Split", *EMOTIONS, "Age", "Country"]
    assert info["File_ID"].str.fullmatch(r"\[\d{5}\]").all()
    assert info["File_ID"].is_unique
    assert info["Split"].value_counts().to_dict() == {"Train": 40, "Val": 16, "Test": 16}
    assert set(info["Country"]) <= {"United States", "South Africa"}
    lab = info[list(EMOTIONS)].to_numpy()
    assert np.isfinite(lab).all() and (lab >= 0).all() and (lab <= 1).all()
    assert (lab.max(axis=1) == 1.0).all()
    targets = pd.read_csv(root / "targets.csv", dtype={"File_ID": str})
    assert list(targets.columns) == ["File_ID", *EMOTIONS]
    assert (targets["File_ID"] == info["File_ID"].str.strip("[]")).all()
    y = targets[list(EMOTIONS)].to_numpy()
    assert (y >= 0).all() and (y.max(axis=1) == 1.0).all()


def test_subject_disjoint_splits(tiny):
    root, _ = tiny
    videos = pd.read_csv(root / "videos.csv", dtype={"File_ID": str})
    per_subject = videos.groupby("subject")["split"].nunique()
    assert (per_subject == 1).all()
    assert videos.groupby("subject").size().max() > 1


def test_store_layout_and_dtypes(tiny):
    root, _ = tiny
    store = FeatureStore(root)
    assert store.streams() == sorted(STREAM_NAMES)
    ids = pd.read_csv(root / "targets.csv", dtype={"File_ID": str})["File_ID"].tolist()
    videos = pd.read_csv(root / "videos.csv", dtype={"File_ID": str}).set_index("File_ID")
    hashes = set()
    for s in STREAM_NAMES:
        meta = store.meta(s)
        assert meta["stream"] == s and meta["dim"] == STREAMS[s]["dim"] and meta["rate"] == STREAMS[s]["rate"]
        assert meta["dtype"] == "float16" and meta["extractor"] == "synthetic"
        assert len(meta["config_hash"]) == 12
        hashes.add(meta["config_hash"])
        index = store.index(s)
        assert list(index.columns) == ["File_ID", "n_steps", "n_valid"]
        assert index["File_ID"].tolist() == ids
        for vid in ids[:6] + ids[-3:]:
            a = _arrays(root, s, vid)
            f, v, ts = a["features"], a["valid"], a["timestamps"]
            assert f.dtype == np.float16 and f.shape[1] == STREAMS[s]["dim"]
            assert v.dtype == bool and ts.dtype == np.float32 and len(v) == len(ts) == len(f)
            assert np.isfinite(f.astype(np.float32)).all()
            assert (np.diff(ts) > 0).all() and ts[0] == 0
            row = index.set_index("File_ID").loc[vid]
            assert row["n_steps"] == len(f) and row["n_valid"] == v.sum()
            dur = videos.loc[vid, "duration"]
            if s == "audio":
                assert v.all()
                assert abs(len(f) - dur * STREAMS["audio"]["rate"]) <= 1.5
            else:
                assert len(f) == videos.loc[vid, "n_frames"]
                assert abs(len(f) / videos.loc[vid, "fps"] - dur) < 0.1
    assert len(hashes) == 1


def test_visual_streams_share_mask_and_are_sensible(tiny):
    root, _ = tiny
    ids = pd.read_csv(root / "targets.csv", dtype={"File_ID": str})["File_ID"].tolist()
    for vid in ids[:10]:
        masks = [_arrays(root, s, vid)["valid"] for s in ("holistic", "au", "mma")]
        assert all((m == masks[0]).all() for m in masks)
        au = _arrays(root, "au", vid)["features"].astype(np.float32)
        assert (au[:, :17] >= 0).all() and (au[:, :17] <= 5).all()
        assert set(np.unique(au[:, 17:])) <= {0.0, 1.0}
        mma = _arrays(root, "mma", vid)["features"].astype(np.float32)
        assert (np.abs(mma[:, :2]) <= 1).all()
        assert np.allclose(mma[:, 2:9].sum(axis=1), 1.0, atol=1e-2)
        assert (mma[:, 9:] > 0).all() and (mma[:, 9:] < 1).all()


def test_durations_and_fps(tiny):
    root, summary = tiny
    videos = pd.read_csv(root / "videos.csv")
    assert videos["duration"].between(9.9, 15.0).all()
    assert videos["fps"].between(25, 30).all()
    assert 10.5 < summary["video_stats"]["mean_duration_s"] < 13


def test_low_valid_videos_in_every_split(tiny):
    root, summary = tiny
    index = FeatureStore(root).index("holistic")
    videos = pd.read_csv(root / "videos.csv", dtype={"File_ID": str})
    merged = videos.merge(index, on="File_ID")
    for split in ("train", "val", "test"):
        sub = merged[merged["split"] == split]
        assert (sub["n_valid"] < 50).sum() >= 1
        assert summary["counts"][split]["under_50_valid_frames"] >= 1
    normal = merged[merged["n_valid"] >= 50]
    frac_invalid = 1 - normal["n_valid"].sum() / normal["n_steps"].sum()
    assert 0.0 < frac_invalid < 0.05


# ------------------------------------------------------------------------------------------- labels
def test_summary(tiny):
    root, summary = tiny
    disk = json.loads((root / "synthetic.json").read_text())
    assert disk["preset"] == "tiny" and disk["seed"] == 0
    assert disk["knobs"] == PRESETS["tiny"]
    for split in ("train", "val", "test"):
        assert 0.0 <= disk["ceiling"][split] <= 1.0
    assert disk["counts"]["train"]["videos"] == 40
    info = pd.read_csv(root / "data_info.csv")
    tr = info[info["Split"] == "Train"][list(EMOTIONS)].to_numpy()
    assert disk["label_stats"]["train"] == label_stats(tr)
    assert 0.15 <= disk["label_stats"]["train"]["zero_fraction"] <= 0.85


def test_label_statistics_large_sample():
    y, lab = sample_labels(20000, np.random.default_rng(1), PRESETS["hume-small"])
    for arr in (y, lab):
        assert (arr >= 0).all() and (arr <= 1).all() and (arr.max(axis=1) == 1.0).all()
    stats = label_stats(lab)
    want = dict(zip(EMOTIONS, (0.32, 0.61, 0.35, 0.24, 0.21, 0.29, 0.53)))
    for e, m in stats["means"].items():
        assert abs(m - want[e]) < 0.03, (e, m)
    assert 0.4 <= stats["zero_fraction"] <= 0.6
    assert 0.65 <= stats["anxiety_fear_r"] <= 0.8
    assert 0.6 <= mean_pearson(y, lab) <= 0.7


# ------------------------------------------------------------------------------- determinism, resume
def test_deterministic_and_seed_dependent(tiny, tmp_path):
    root, _ = tiny
    again = tmp_path / "again"
    generate(again, "tiny", seed=0, progress=False, n_train=6, n_val=3, n_test=3)
    other = tmp_path / "other"
    generate(other, "tiny", seed=1, progress=False, n_train=6, n_val=3, n_test=3)
    again2 = tmp_path / "again2"
    generate(again2, "tiny", seed=0, progress=False, n_train=6, n_val=3, n_test=3)
    for s in STREAM_NAMES:
        for vid in ("00001", "00007", "00012"):
            a, b, c = _arrays(again, s, vid), _arrays(again2, s, vid), _arrays(other, s, vid)
            for k in a:
                assert np.array_equal(a[k], b[k])
            assert a["features"].shape != c["features"].shape or not np.array_equal(a["features"], c["features"])
    for name in ("data_info.csv", "targets.csv", "synthetic.json"):
        assert (again / name).read_bytes() == (again2 / name).read_bytes()
        assert (again / name).read_bytes() != (other / name).read_bytes()


def test_resume_gives_identical_arrays(tiny, tmp_path):
    root, _ = tiny
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    removed = ["00003", "00017", "00050"]
    for vid in removed:
        (copy / "features" / "holistic" / f"{vid}.npz").unlink()
    (copy / "features" / "audio" / "00060.npz").unlink()
    (copy / "synthetic.json").unlink()
    summary = generate(copy, "tiny", seed=0, progress=False)
    assert summary["_generated_now"] == 4
    assert (copy / "synthetic.json").read_bytes() == (root / "synthetic.json").read_bytes()
    for s in STREAM_NAMES:
        assert (copy / "features" / s / "index.csv").read_bytes() == (root / "features" / s / "index.csv").read_bytes()
        for vid in removed + ["00060", "00001"]:
            a, b = _arrays(root, s, vid), _arrays(copy, s, vid)
            for k in a:
                assert np.array_equal(a[k], b[k])


def test_generate_refuses_other_seed_in_same_dir(tiny, tmp_path):
    root, _ = tiny
    with pytest.raises(ValueError, match="config_hash"):
        generate(root, "tiny", seed=3, progress=False)


def test_ensure_synthetic(tiny, tmp_path):
    root, _ = tiny
    assert ensure_synthetic(root, "tiny", seed=0) == root
    with pytest.raises(ValueError, match="hume-small"):
        ensure_synthetic(root, "hume-small", seed=0)
    with pytest.raises(ValueError, match="seed"):
        ensure_synthetic(root, "tiny", seed=5)
    # a fresh directory is generated, and synthetic.json comes last
    fresh = tmp_path / "fresh"
    assert ensure_synthetic(fresh, "tiny", seed=0) == fresh
    assert (fresh / "synthetic.json").exists()
    newest = max((p for p in fresh.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime_ns)
    assert newest.name == "synthetic.json"


def test_cli_resumes_complete_dataset(tiny, capsys):
    import importlib.util
    from pathlib import Path

    root, _ = tiny
    path = Path(__file__).resolve().parents[1] / "tools" / "make_synthetic.py"
    spec = importlib.util.spec_from_file_location("make_synthetic", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--out", str(root), "--preset", "tiny", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 videos generated now" in out and "ceiling" in out and "Anxiety-Fear r" in out
    assert mod.main(["--out", str(root), "--preset", "tiny", "--seed", "9", "--no-progress"]) == 2


def test_proxy_scores_smoke(tiny):
    root, _ = tiny
    table = proxy_scores(root, streams=("au", "mma"))  # the wide streams make the ridge slow
    assert len(table) == 6
    assert set(table["pool"]) == {"mean", "peak"}
    assert set(table["streams"]) == {"au", "mma", "all"}
    assert np.isfinite(table[["val", "test", "of_ceiling"]].to_numpy()).all()
