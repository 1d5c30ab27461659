"""Face-crop videos as a stream (issue 21, item 1; `eri.features.crops`): stored through the store's codec,
read back exactly (lossless) or nearly (jpeg), hashed / resumed / reported by extraction on a real clip, read
lazily in bounded memory, and refused by an ordinary branch."""

import importlib.util
import shutil
import tracemalloc

import numpy as np
import pytest

from eri.data.store import FeatureStore
from eri.errors import ConfigError
from eri.data.crops import crop_count, read_crops
from eri.features.crops import FaceCrops
from eri.streams import StreamMeta

MEDIA = importlib.util.find_spec("feat").origin.rsplit("/", 1)[0] + "/tests/data"
FAST = ["faces.every_k=5", "faces.detect_scale=0.5", "faces.crop_size=112", "decode.max_side=640", "decode.fps=5"]


def _faces(t: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth face-like images (gradients plus a blob and noise): compressible as real crops are."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([128 + 80 * yy, 100 + 60 * xx, 90 + 50 * (1 - ((yy - .5) ** 2 + (xx - .5) ** 2) * 4)], -1)
    shift = rng.normal(0, 8, (t, 1, 1, 3)) + rng.normal(0, 3, (t, size, size, 3))
    return np.clip(base[None] + shift, 0, 255).astype(np.uint8)


def _write(store, stream, frames, valid, **config):
    ex = FaceCrops(size=frames.shape[1], **config)
    store.write_meta(stream, StreamMeta(stream, ex.dim, extractor="crops", extra=ex.metadata()))
    store.write(stream, "v", frames.reshape(len(frames), -1).astype(np.float16), valid, np.arange(len(frames)) / 25)


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_mma_e2e_crops_stored_and_read_back_are_equal(tmp_path, encoding):
    store, frames = FeatureStore(tmp_path), _faces(30, 64)
    valid = np.ones(30, bool)
    valid[[4, 7]] = False
    frames[~valid] = 0  # the pipeline hands zeros for frames without a face
    _write(store, "crops", frames, valid, stride=2, encoding=encoding)
    meta = store.stream_meta("crops")
    assert (meta.dtype, meta.dim, meta.extra["shape"], meta.extra["stride"]) == ("uint8", 64 * 64 * 3, [64, 64, 3], 2)
    assert crop_count(store, "crops", "v") == 15 and store.inspect("crops", "v")["n_valid"] == 14  # frame 4 kept, 7 not
    x, v, t = read_crops(tmp_path, "crops", "v", [2, 0, 14, 2])
    want = frames[::2][[2, 0, 14, 2]]
    np.testing.assert_allclose(t, np.array([4, 0, 28, 4]) / 25, atol=1e-6)
    assert v.tolist() == [False, True, True, False] and x.dtype == np.uint8 and not x[0].any()
    err = np.abs(x.astype(int) - want).mean()
    assert err == 0 if encoding != "jpeg" else 0 < err < 3, err  # jpeg q95: lossy, about a grey level
    whole = read_crops(store, "crops", "v")[0].astype(int) - frames[::2]
    assert np.abs(whole).max() == 0 if encoding != "jpeg" else np.abs(whole).mean() < 3


def test_mma_e2e_reading_a_subset_is_bounded(tmp_path):
    """A 2000-frame video, 64 random frames read: memory follows the 64 frames, not the video."""
    store, frames = FeatureStore(tmp_path), _faces(2000, 64)
    for enc in ("raw", "png"):
        _write(store, enc, frames, np.ones(2000, bool), encoding=enc)
    pick = np.random.default_rng(1).choice(2000, 64, replace=False)
    subset = 64 * 64 * 64 * 3
    for enc in ("raw", "png"):
        tracemalloc.start()
        x, _, _ = read_crops(store, enc, "v", pick)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (x == frames[pick]).all() and peak < 3 * subset, (enc, peak)
    tracemalloc.start()
    read_crops(store, "raw", "v")  # the whole video: the bound above is not the reader's floor
    assert tracemalloc.get_traced_memory()[1] > 2000 * 64 * 64 * 3
    tracemalloc.stop()


def test_mma_e2e_crop_stream_is_hashed_resumable_and_reported(tmp_path, capsys):
    from eri.features.video import cut
    from tools.extract import main as extract_main

    root = tmp_path / "data"
    root.mkdir()
    cut(f"{MEDIA}/WolfgangLanger_Pexels.mp4", root / "face.mp4", 0.0, 2.0)
    shutil.copy(f"{MEDIA}/no_face.mp4", root / "noface.mp4")
    run = ["--config", "configs/extract/crops.yaml", "--data-root", str(root), "--no-progress", "layout=folder", *FAST]
    assert extract_main(run + ["extractors.0.config.stride=2"]) == 0
    store = FeatureStore(root)
    meta, idx = store.stream_meta("crops"), store.index("crops").set_index("File_ID")
    assert meta.dtype == "uint8" and meta.extra["encoding"] == "png" and meta.config_hash
    assert idx.loc["face", "n_steps"] == 5 and idx.loc["face", "n_valid"] == 5  # 2 s at 5 fps, every 2nd frame
    x, valid, t = read_crops(root, "crops", "face")
    assert x.shape == (5, 64, 64, 3) and valid.all() and x.std() > 20 and np.allclose(np.diff(t), 0.4, atol=1e-3)
    x, valid, _ = read_crops(root, "crops", "noface")
    assert not valid.any() and not x.any()  # no face: zeros, valid False, reported (not failed)
    report = (root / "extraction_report.csv").read_text()
    assert "noface,crops,faces,no face in any" in report and "True" not in report
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "features" / "crops").glob("*.npz")}
    capsys.readouterr()
    assert extract_main(run + ["extractors.0.config.stride=2"]) == 0
    assert "0 processed, 2 already done" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in (root / "features" / "crops").glob("*.npz")}
    assert extract_main(run + ["extractors.0.config.stride=2", "extractors.0.config.size=32"]) == 0  # recomputed
    assert store.stream_meta("crops").config_hash != meta.config_hash
    assert read_crops(root, "crops", "face")[0].shape == (5, 32, 32, 3)


def test_mma_e2e_an_ordinary_branch_refuses_the_crop_stream(tmp_path):
    from eri.data.datamodule import ERIDataModule
    from tests.conftest import make_random_dataset

    root = make_random_dataset(tmp_path, n=(3, 2, 2), dims={"mma": 26})
    store = FeatureStore(root)
    ex = FaceCrops()
    store.write_meta("crops", StreamMeta("crops", ex.dim, extractor="crops", extra=ex.metadata()))
    for vid in store.index("mma")["File_ID"]:
        store.write("crops", vid, np.zeros((60, ex.dim), np.float16), np.ones(60, bool), np.arange(60) / 25)
    with pytest.raises(ConfigError, match=r"^stream 'crops' holds face-crop images.*issue 21 item 3"):
        ERIDataModule(root, ["mma", "crops"], progress=False).setup()


# ----------------------------------------------------------------------------- written chunk by chunk (flat memory)
def _meta(store, size, **config):
    ex = FaceCrops(size=size, **config)
    store.write_meta("crops", StreamMeta("crops", ex.dim, extractor="crops", extra=ex.metadata()))


def _leftovers(store):
    """Anything in the stream folder besides meta.json and finished files (temporary files of either writer)."""
    return sorted(p.name for p in (store.dir / "crops").iterdir() if p.name != "meta.json" and p.suffix != ".npz")


@pytest.mark.parametrize("encoding,stride", [("raw", 1), ("png", 3), ("jpeg", 2)])
def test_crops_written_chunk_by_chunk_are_the_bytes_of_the_whole_array_write(tmp_path, encoding, stride):
    """Chunks out of order, a repeated chunk, frames never added (no face) and a frame added but not valid:
    the file is byte for byte the one `FeatureStore.write` gives for the whole array, and reads back."""
    whole, streamed, n = FeatureStore(tmp_path / "a"), FeatureStore(tmp_path / "b"), 60
    frames = _faces(n, 16)
    valid = np.ones(n, bool)
    valid[[3, 4, 9, 21]] = False
    valid[40:52] = False
    x = frames.reshape(n, -1)
    want = np.where(valid[:, None], x, 0)  # what extraction hands the whole-array write: zeros without a face
    for store in (whole, streamed):
        _meta(store, 16, stride=stride, encoding=encoding)
    whole.write("crops", "v", want.astype(np.float16), valid, np.arange(n) / 25, extra={"config_hash": np.array(["h"])})
    with streamed.writer("crops", "v") as w:
        for idx in (np.arange(30, 45), np.arange(0, 15), np.arange(45, 60), np.arange(15, 30), np.arange(0, 15)):
            idx = idx[valid[idx] | (idx == 21)]  # frame 21: added, yet not valid (stored as zeros)
            w.add(idx, x[idx])
        w.commit(valid, np.arange(n) / 25, extra={"config_hash": np.array(["h"])})
    assert streamed.path("crops", "v").read_bytes() == whole.path("crops", "v").read_bytes()
    assert _leftovers(streamed) == []
    got, v, _ = read_crops(streamed, "crops", "v", [7, 0, 7])
    np.testing.assert_array_equal(v, valid[::stride][[7, 0, 7]])
    assert encoding == "jpeg" or (got == want[::stride][[7, 0, 7]].reshape(3, 16, 16, 3)).all()


def _extraction(root):
    from eri.features.config import load_extract_config
    from eri.features.pipeline import Extraction

    cfg = load_extract_config("configs/extract/crops.yaml",
                              ["layout=folder", "extractors.0.config.size=16", "dtype=float16"])
    ex = Extraction(cfg, root, progress=False)
    ex.write_meta()
    return ex


def _events(frames, valid, order, fail_at=None, worker_chunk=None, bad_chunk=None):
    """What `face_flow` yields for a video: groups of crops (in ``order``), then the summary. ``fail_at``:
    (k, exception) raised before group k; ``worker_chunk``: that group comes as a worker's features;
    ``bad_chunk``: that group's crops are floats, which the extractor refuses (it fails mid-video)."""
    from eri.features.faceflow import Crops, FaceSummary, Features

    for k, idx in enumerate(order):
        if fail_at and k == fail_at[0]:
            raise fail_at[1]
        idx = idx[valid[idx]]
        if k == worker_chunk:
            yield Features(idx, {"crops": frames[idx].reshape(len(idx), -1)}, {})
        else:
            yield Crops(idx, frames[idx].astype(np.float32) if k == bad_chunk else frames[idx])
    yield FaceSummary(len(valid), valid, np.arange(len(valid)) / 25, None)


def test_extraction_streams_crops_in_any_order_and_writes_what_the_whole_array_path_writes(tmp_path):
    ex, n = _extraction(tmp_path), 50
    frames, valid = _faces(n, 16), np.ones(n, bool)
    valid[10:20] = False  # no face: never handed to the extractor
    order = [np.arange(25, 50), np.arange(0, 25)]
    assert ex._faces("v", tmp_path / "v.mp4", _events(frames, valid, order, worker_chunk=1), ex.streams) == n
    streamed = ex.store.path("crops", "v").read_bytes()
    ex._write(ex.streams[0], "v", np.where(valid[:, None], frames.reshape(n, -1), 0), valid, np.arange(n) / 25)
    assert ex.store.path("crops", "v").read_bytes() == streamed and _leftovers(ex.store) == []  # the whole-array path
    x, v, _ = read_crops(tmp_path, "crops", "v")
    assert (v == valid).all() and not x[~valid].any() and (x[valid] == frames[valid]).all()


@pytest.mark.parametrize("failure", ["decode", "extractor", "interrupt"])
def test_a_failure_mid_video_leaves_no_crop_file_and_no_temporary_file(tmp_path, failure):
    from eri.features.video import DecodeError

    ex, n = _extraction(tmp_path), 40
    frames, valid = _faces(n, 16), np.ones(n, bool)
    order = [np.arange(0, 10), np.arange(10, 20), np.arange(20, 40)]
    stale = ex.store.path("crops", "v")
    stale.write_bytes(b"an earlier extraction with other settings")  # dropped on failure, as before
    run = lambda events: ex._faces("v", tmp_path / "v.mp4", events, ex.streams)  # noqa: E731
    if failure == "interrupt":  # Ctrl-C propagates (the job then writes its report and index)
        with pytest.raises(KeyboardInterrupt):
            run(_events(frames, valid, order, fail_at=(2, KeyboardInterrupt())))
        assert _leftovers(ex.store) == []
        return
    run(_events(frames, valid, order, bad_chunk=1) if failure == "extractor" else
        _events(frames, valid, order, fail_at=(2, DecodeError("v.mp4: damaged"))))
    assert not stale.exists() and _leftovers(ex.store) == []
    row = ex.report[-1]
    assert row["stream"] == "crops" and row["failed"]
    assert row["stage"] == ("decode" if failure == "decode" else "extract")


def test_the_chunk_writer_holds_a_chunk_not_the_video(tmp_path):
    """tracemalloc peak while writing 150 vs 600 frames of 64 px crops in chunks of 25: flat, and far below
    the whole video (which the whole-array write holds several times over, checked so the bound can fail)."""
    store, chunk = FeatureStore(tmp_path), _faces(25, 64).reshape(25, -1)
    _meta(store, 64)

    def peak(n: int, whole: bool = False) -> int:
        tracemalloc.start()
        if whole:
            store.write("crops", f"w{n}", np.tile(chunk, (n // 25, 1)), np.ones(n, bool), np.arange(n) / 25)
        else:
            with store.writer("crops", f"s{n}") as w:
                for k in range(0, n, 25):
                    w.add(np.arange(k, k + 25), chunk)
                w.commit(np.ones(n, bool), np.arange(n) / 25)
        out = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return out

    peak(25)  # first-use allocations (imports, PIL's encoder) are not the writer's
    small, large, video = peak(150), peak(600), 600 * chunk.shape[1]
    assert large < 1.2 * small + 64 * 1024 and large < video / 4, (small, large, video)
    assert peak(600, whole=True) > video
    assert crop_count(store, "crops", "s600") == 600 and _leftovers(store) == []
