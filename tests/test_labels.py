import shutil

import numpy as np
import pandas as pd
import pytest

from eri.constants import EMOTIONS
from eri.data.datamodule import ERIDataModule
from eri.data.labels import LabelError, read_manifest
from eri.data.store import StoreError


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _to_muse(abaw_root, muse_root):
    """Write the same labels in the MuSe 2022 layout."""
    df = pd.read_csv(abaw_root / "data_info.csv", dtype={"File_ID": str})
    muse_root.mkdir()
    ids = df["File_ID"].str.strip("[]")
    pd.DataFrame({"Id": ids, "Subject": 1, "Partition": df["Split"].map({"Train": "train", "Val": "devel", "Test": "test"})}).to_csv(
        muse_root / "partition.csv", index=False
    )
    lab = df[list(EMOTIONS)].copy()
    lab.insert(0, "File_ID", ids)
    lab.to_csv(muse_root / "labels.csv", index=False)
    return df


def test_abaw5_and_muse_give_the_same_manifest(random_root, tmp_path):
    _to_muse(random_root, tmp_path / "muse")
    a = read_manifest(random_root)
    m = read_manifest(tmp_path / "muse")
    pd.testing.assert_frame_equal(a[["File_ID", "split", *EMOTIONS]], m[["File_ID", "split", *EMOTIONS]])
    assert a["File_ID"].iloc[0] == "00001" and set(a["split"]) == {"train", "val", "test"}


def test_muse_feature_csvs_are_read_like_the_store(tmp_path, random_root):
    df = _to_muse(random_root, tmp_path / "muse")
    feats = tmp_path / "muse" / "feats" / "FAUs"
    feats.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for vid in df["File_ID"].str.strip("[]"):
        x = rng.normal(size=(70, 5))
        x[3] = np.nan  # no face in that frame
        out = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
        out.insert(0, "segment_id", 1)
        out.insert(0, "timestamp", np.arange(70) * 40)
        out.to_csv(feats / f"{vid}.csv", index=False)
    dm = ERIDataModule(tmp_path / "muse", ["FAUs"], progress=False, min_valid_frames=10)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"]["FAUs"].shape[-1] == 5
    assert set(batch["lengths"]["FAUs"].tolist()) == {69}  # the NaN frame was dropped


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.drop(columns=["Fear"]), "missing column"),
        (lambda df: pd.concat([df, df.iloc[:1]]), "duplicate File_ID"),
        (lambda df: df.assign(Anxiety=df["Anxiety"].where(df.index != 0, 1.5)), "outside"),
        (lambda df: df.assign(Split=df["Split"].where(df.index != 0, "Dev")), "unknown Split"),
    ],
)
def test_abaw5_reader_errors_name_the_file_and_problem(random_root, tmp_path, mutate, message):
    root = _copy(random_root, tmp_path / "d")
    df = pd.read_csv(root / "data_info.csv", dtype={"File_ID": str})
    mutate(df).to_csv(root / "data_info.csv", index=False)
    with pytest.raises(LabelError, match=message) as e:
        read_manifest(root)
    assert "data_info.csv" in str(e.value)


def test_muse_reader_errors(random_root, tmp_path):
    _to_muse(random_root, tmp_path / "muse")
    lab = pd.read_csv(tmp_path / "muse" / "labels.csv", dtype=str)
    pd.concat([lab, lab.iloc[:1]]).to_csv(tmp_path / "muse" / "labels.csv", index=False)
    with pytest.raises(LabelError, match="labels.csv: duplicate"):
        read_manifest(tmp_path / "muse")
    with pytest.raises(LabelError, match="no data_info.csv"):
        read_manifest(tmp_path / "nothing")


def test_ids_without_features_and_unlabeled_training_rows(random_root, tmp_path):
    root = _copy(random_root, tmp_path / "d")
    df = pd.read_csv(root / "data_info.csv", dtype={"File_ID": str})
    pd.concat([df, df.iloc[:1].assign(File_ID="[99999]")]).to_csv(root / "data_info.csv", index=False)
    with pytest.raises(StoreError, match="99999"):
        ERIDataModule(root, ["mma"], progress=False).setup()

    root2 = _copy(random_root, tmp_path / "d2")
    df.loc[0, "Fear":"Surprise"] = np.nan
    df.loc[0, list(EMOTIONS)] = np.nan
    df.to_csv(root2 / "data_info.csv", index=False)
    with pytest.raises(ValueError, match="no labels"):
        ERIDataModule(root2, ["mma"], progress=False).setup()


def test_unknown_stream_lists_available(random_root):
    with pytest.raises(StoreError, match="streams in this store: au, audio, mma"):
        ERIDataModule(random_root, ["holistic"], progress=False).setup()
