import numpy as np
import pytest
import torch

from eri.data.datamodule import ERIDataModule
from eri.data.dataset import parse_stream
from eri.data.store import FeatureStore


@pytest.fixture(scope="module")
def dm(random_root):
    dm = ERIDataModule(random_root, ["mma", "au[0:17]", "audio"], batch_size=4, progress=False)
    dm.setup()
    return dm


def test_batches_pad_each_stream_to_its_own_length(dm):
    batch = next(iter(dm.train_dataloader()))
    x, lengths = batch["x"], batch["lengths"]
    assert x["mma"].shape[:2] == (4, int(lengths["mma"].max())) and x["mma"].shape[2] == 26
    assert x["au[0:17]"].shape[2] == 17
    assert x["audio"].shape[1] == int(lengths["audio"].max()) < x["mma"].shape[1]
    assert batch["y"].shape == (4, 7) and batch["y"].dtype == torch.float32
    # padding is zeros and lengths are the true lengths
    for b in range(4):
        n = int(lengths["mma"][b])
        assert torch.all(x["mma"][b, n:] == 0) and torch.any(x["mma"][b, n - 1] != 0)


def test_stream_column_slices_match_the_store(dm, random_root):
    vid = dm.splits["train"].ids[0]
    feats, valid = FeatureStore(random_root).load("au", vid)
    item = dm.datasets["train"][0]
    np.testing.assert_array_equal(item["x"]["au[0:17]"].numpy(), feats[valid][:, :17])
    assert parse_stream("au") == ("au", slice(None, None))
    with pytest.raises(ValueError, match="bad stream spec"):
        parse_stream("au[1-3]")


def test_invalid_video_policy(dm):
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    # 00002 (train) has 10 valid frames < 50: not trained on
    assert not train.usable[train.ids.index("00002")]
    assert "00002" not in [train.ids[p] for p in dm.datasets["train"].positions]
    # 00015 (val) has too few frames, 00020 (test) has no audio: kept in the split, not in the dataset
    assert not val.usable[val.ids.index("00015")] and len(dm.datasets["val"]) == len(val.ids) - 1
    assert not test.usable[test.ids.index("00020")]
    # the fill value is the mean of the usable training labels
    np.testing.assert_allclose(dm.train_mean, train.labels[train.usable].mean(0))


def test_frames_without_face_are_dropped_or_kept(random_root):
    keep = ERIDataModule(random_root, ["mma"], drop_invalid_frames=False, min_valid_frames=0, progress=False)
    keep.setup()
    drop = ERIDataModule(random_root, ["mma"], min_valid_frames=0, progress=False)
    drop.setup()
    pos = drop.splits["train"].ids.index("00002")
    assert len(drop.datasets["train"][pos]["x"]["mma"]) == 10
    assert len(keep.datasets["train"][pos]["x"]["mma"]) > 10


def test_frame_stride_keeps_every_kth_frame(random_root):
    full = ERIDataModule(random_root, ["mma"], progress=False)
    half = ERIDataModule(random_root, ["mma"], frame_stride=2, progress=False)
    full.setup()
    half.setup()
    a, b = full.datasets["train"][0]["x"]["mma"], half.datasets["train"][0]["x"]["mma"]
    torch.testing.assert_close(b, a[::2])
    # the valid-frame minimum is counted at the native rate, not after striding
    assert np.array_equal(full.splits["val"].usable, half.splits["val"].usable)


def test_nan_features_become_invalid_frames(random_root, tmp_path):
    store = FeatureStore(tmp_path)
    x = np.ones((5, 3), np.float32)
    x[1, 2] = np.nan
    store.write("s", "00001", x, np.ones(5, bool), np.arange(5.0))
    feats, valid = store.load("s", "00001")
    assert valid.tolist() == [True, False, True, True, True] and np.isfinite(feats).all()


def test_stream_stats_are_training_set_column_moments(dm):
    arrays = dm.datasets["train"].arrays["mma"]
    allsteps = np.concatenate(arrays).astype(np.float64)
    mean, std = dm.stream_stats()["mma"]
    np.testing.assert_allclose(mean, allsteps.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, allsteps.std(0), rtol=1e-4)


def test_store_files_are_byte_identical_across_writes(tmp_path):
    a, b = FeatureStore(tmp_path / "a"), FeatureStore(tmp_path / "b")
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float16)
    for store in (a, b):
        store.write("s", "00001", x, np.ones(7, bool), np.arange(7.0))
    assert (tmp_path / "a/features/s/00001.npz").read_bytes() == (tmp_path / "b/features/s/00001.npz").read_bytes()
    feats, valid = a.load("s", "00001")
    np.testing.assert_array_equal(feats, x.astype(np.float32))
