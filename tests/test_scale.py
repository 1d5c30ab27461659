"""Training data at Hume-Reaction scale: the packed, memory-mapped copy of the store gives the same
batches, statistics and numbers as loading into memory; it is rebuilt when the store changes; and
length-bucketed batching is deterministic, complete and pads less."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from eri.config import load_config
from eri.data.datamodule import BucketShuffle, EpochShuffle, ERIDataModule, padding_fraction
from eri.data.packed import ensure_packed, packed_dir
from eri.data.store import FeatureStore
from eri.errors import StoreError
from eri.training.run import train

SPECS = ["au[0:17]", "mma", "audio", "holistic"]


def _dm(root, cache, **kw):
    dm = ERIDataModule(root, SPECS, frame_stride=2, progress=False, cache=cache, batch_size=8, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def store(tiny_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("scale") / "tiny"
    shutil.copytree(tiny_root, root)
    return root


def test_memmap_batches_equal_memory_batches(store):
    mem, mm = _dm(store, "memory"), _dm(store, "memmap")
    assert (packed_dir(FeatureStore(store), "holistic") / "features.npy").is_file()
    assert np.load(packed_dir(FeatureStore(store), "holistic") / "features.npy", mmap_mode="r").dtype == np.float16
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(mem.splits[split].usable, mm.splits[split].usable)
        a, b = list(mem.predict_loader(split)), list(mm.predict_loader(split))
        for x, y in zip(a, b):
            assert torch.equal(x["index"], y["index"]) and torch.equal(x["y"], y["y"])
            for s in SPECS:
                assert torch.equal(x["x"][s], y["x"][s]) and torch.equal(x["lengths"][s], y["lengths"][s])
    sm, sp = mem.stream_stats(), mm.stream_stats()
    for s in SPECS:
        np.testing.assert_array_equal(sm[s][0], sp[s][0])
        np.testing.assert_array_equal(sm[s][1], sp[s][1])
    assert list((store / "features" / "packed_stats").glob("*.npz"))  # the statistics pass is kept


def test_packed_copy_follows_the_store_and_reports_damage(store, capsys):
    fs = FeatureStore(store)
    before = (packed_dir(fs, "mma") / "index.json").stat().st_mtime_ns
    ensure_packed(fs, "mma", progress=False)
    assert (packed_dir(fs, "mma") / "index.json").stat().st_mtime_ns == before  # current: not rebuilt
    vid = fs.index("mma")["File_ID"].iloc[3]
    f, v, t = fs.load("mma", vid, with_times=True)
    fs.write("mma", vid, f * 0 + 0.5, v, t)  # the store changed: the packed copy must follow
    ensure_packed(fs, "mma", progress=False)
    assert (packed_dir(fs, "mma") / "index.json").stat().st_mtime_ns != before
    from eri.data.packed import PackedStream

    np.testing.assert_array_equal(PackedStream(packed_dir(fs, "mma")).load(vid)[0], f * 0 + 0.5)
    fs.path("mma", vid).write_bytes(b"")  # damaged: the data module refuses or skips it, as in memory mode
    with pytest.raises(StoreError, match=f"{vid}.npz is damaged.*bad_files=skip"):
        _dm(store, "memmap")
    dm = _dm(store, "memmap", bad_files="skip")
    assert [s["File_ID"] for s in dm.skipped] == [vid]


def test_memmap_training_gives_the_memory_numbers(tiny_root, tmp_path):
    out = {}
    for cache in ("memory", "memmap"):
        root = tmp_path / f"data-{cache}"
        shutil.copytree(tiny_root, root)
        cfg = load_config("configs/demo.yaml", tiny_overrides(root, tmp_path / cache, "trainer.max_epochs=2",
                                                                "data.batch_size=8", "model.preset=tiny", f"data.cache={cache}"))
        out[cache] = train(cfg)
    for split in ("val", "test"):
        assert out["memory"][split]["mean_pcc"] == out["memmap"][split]["mean_pcc"]


def test_bucketing_is_seeded_complete_and_pads_less():
    lengths = np.random.default_rng(0).integers(100, 500, 1000)
    s = BucketShuffle(lengths, 32, seed=3)
    s.set_epoch(2)
    first = s.order()
    assert sorted(first) == list(range(1000)) and np.array_equal(first, s.order())  # seeded by (seed, epoch)
    s.set_epoch(3)
    assert not np.array_equal(first, s.order())
    plain = EpochShuffle(1000, 3)
    plain.set_epoch(2)
    assert padding_fraction(lengths, first, 32) < 0.5 * padding_fraction(lengths, plain.order(), 32)


def test_measured_peak_rss_is_the_commands_own_not_the_benchmarks():
    """A command started from a benchmark that holds much memory reports its own peak, not the benchmark's
    (a process keeps the peak of the image it replaced at exec), and its exit code and output come back."""
    import sys

    from eri.benchmarks.scale import run_measured

    held = np.ones(600 * 2**20 // 8)  # 600 MB resident in this process
    child = "import numpy as np, sys; a = np.ones(200 * 2**20 // 8); print('made', a.nbytes // 2**20); sys.exit(3)"
    res = run_measured([sys.executable, "-c", child])
    assert res["code"] == 3 and "made 200" in res["output"]
    assert 200 <= res["peak_rss_mb"] < 450, res["peak_rss_mb"]
    assert held.sum() > 0


TRIM_PROBE = """
import numpy as np
from eri.training.skeleton import return_freed_memory
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
big = np.ones(16 * 2**20 // 8); del big  # freeing an mmapped 16 MB block raises glibc's mmap threshold
keep, holes = [], []
for _ in range(100):  # 3 MB blocks on the heap, each followed by a 64 KB survivor: freed, they are holes
    holes.append(np.ones(3 * 2**20 // 8))
    keep.append(np.ones(2**16 // 8))
del holes
before = rss(); return_freed_memory(); print(before, rss())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc (Linux)")
def test_a_finished_run_hands_its_freed_heap_back_to_the_os():
    """A process training run after run (ablation, worlds, ensembles, a search worker) returns each run's freed
    heap (`return_freed_memory`, after every cached run and trial): 300 MB of freed holes between survivors
    leave RSS; without it an ablation process grew to 13.5 GB over 16 runs and was OOM-killed."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert before - after > 200  # MB
