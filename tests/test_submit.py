"""The challenge submission (tools/submit.py) and the dataset signature it relies on: the Test rows of the
label file in its order with the ids as written, refused on bad predictions or on data that changed
since training (labels, split, feature index)."""

from __future__ import annotations

import contextlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides

from eri.config import load_config, streams_of
from eri.constants import EMOTIONS
from eri.data.signature import dataset_signature, differences, shared_signature
from eri.ensembles.submission import check_submission, submission_rows
from eri.errors import EXIT_INPUT, EXIT_OK, InputError
from eri.training.run import train
from tools.submit import main as submit_main


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_root):
    """One epoch of the tiny demo on a private copy of `tiny_root` (the tests edit its files)."""
    root = tmp_path_factory.mktemp("submit") / "data"
    shutil.copytree(tiny_root, root)
    out = tmp_path_factory.mktemp("submit_run")
    cfg = load_config("configs/demo.yaml", tiny_overrides(root, out, "trainer.max_epochs=1", "model.preset=tiny",
                                                          "data.batch_size=16"))
    train(cfg)
    return root, out, cfg


@contextlib.contextmanager
def edited(path, change):
    """``path`` rewritten by ``change(text) -> text`` for the block, then put back byte for byte."""
    before = path.read_bytes()
    path.write_text(change(before.decode()))
    try:
        yield
    finally:
        path.write_bytes(before)


def _copy(run, dst, predictions=None):
    """The files submit reads from a run, optionally with other test predictions."""
    dst.mkdir()
    for f in ("config.yaml", "dataset.json", "predictions_test.csv"):
        shutil.copy(run / f, dst / f)
    if predictions is not None:
        predictions.to_csv(dst / "predictions_test.csv", index=False)
    return dst


def _refused(capsys, src, out, *match):
    assert submit_main([str(src), "--out", str(out)]) == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and all(m in err for m in match), err
    assert not out.exists()
    return err


def test_submission_holds_the_test_rows_as_written_in_order(run, tmp_path, capsys):
    root, out, cfg = run
    sig = json.loads((out / "dataset.json").read_text())
    assert sig == dataset_signature(root, streams_of(cfg), "auto")
    assert sig["layout"] == "abaw5" and sorted(sig["features"]) == sorted(streams_of(cfg))
    dst = tmp_path / "sub.csv"
    assert submit_main([str(out), "--out", str(dst)]) == EXIT_OK
    info = pd.read_csv(root / "data_info.csv", dtype=str)
    sub = pd.read_csv(dst, dtype={"File_ID": str})
    assert list(sub.columns) == ["File_ID", *EMOTIONS]
    assert sub["File_ID"].tolist() == info.loc[info["Split"] == "Test", "File_ID"].tolist()
    assert sub["File_ID"].str.startswith("[").all()
    pred = pd.read_csv(out / "predictions_test.csv", dtype={"File_ID": str}).set_index("File_ID")
    values = sub[list(EMOTIONS)].to_numpy()
    np.testing.assert_allclose(values, pred.loc[sub["File_ID"].str.strip("[]"), list(EMOTIONS)].to_numpy(), atol=1e-6)
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1


def test_wrong_order_duplicates_nan_and_out_of_range_are_refused(run, tmp_path, capsys):
    root, out, _ = run
    column, ids, _ = submission_rows(root, "auto")
    good = pd.DataFrame({column: ids, **{e: 0.5 for e in EMOTIONS}})
    check_submission(good, column, ids, "sub")
    with pytest.raises(InputError, match="out of order"):
        check_submission(good.iloc[::-1].reset_index(drop=True), column, ids, "sub")
    with pytest.raises(InputError, match="more than once"):
        check_submission(pd.concat([good, good.iloc[:1]], ignore_index=True), column, ids, "sub")
    with pytest.raises(InputError, match="columns"):
        check_submission(good[[column, *reversed(EMOTIONS)]], column, ids, "sub")

    pred = pd.read_csv(out / "predictions_test.csv", dtype={"File_ID": str})
    dst = tmp_path / "sub.csv"
    _refused(capsys, _copy(out, tmp_path / "dup", pd.concat([pred, pred.iloc[:1]])), dst, "more than once")
    nan = pred.copy()
    nan.loc[3, "Fear"] = np.nan
    _refused(capsys, _copy(out, tmp_path / "nan", nan), dst, "non-numeric", pred.loc[3, "File_ID"])
    _refused(capsys, _copy(out, tmp_path / "missing", pred.iloc[1:]), dst, "no prediction for 1 ")
    high = pred.copy()
    high.loc[0, "Surprise"] = 1.2
    _refused(capsys, _copy(out, tmp_path / "high", high), dst, "outside [0, 1]", "--clip")
    assert submit_main([str(tmp_path / "high"), "--out", str(dst), "--clip"]) == EXIT_OK
    assert pd.read_csv(dst)["Surprise"].max() == 1.0
    # predictions in another order are put in the label file's order
    _copy(out, tmp_path / "shuffled", pred.sample(frac=1, random_state=0))
    assert submit_main([str(tmp_path / "shuffled"), "--out", str(tmp_path / "b.csv")]) == EXIT_OK
    assert submit_main([str(out), "--out", str(tmp_path / "a.csv")]) == EXIT_OK
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_changed_labels_or_split_after_training_are_refused(run, tmp_path, capsys):
    root, out, _ = run
    dst = tmp_path / "sub.csv"
    info = root / "data_info.csv"
    with edited(info, lambda t: t.replace(",Train,", ",Val,", 1)):
        _refused(capsys, out, dst, "trained on other data", "data_info.csv changed", "split assignment changed")
    def relabel(text):
        df = pd.read_csv(info, dtype=str, keep_default_na=False)
        df.loc[0, "Adoration"] = "0.123456"
        return df.to_csv(index=False)

    with edited(info, relabel):
        err = _refused(capsys, out, dst, "data_info.csv changed")
        assert "split" not in err
    assert submit_main([str(out), "--out", str(dst)]) == EXIT_OK  # restored: the same data again


def test_changed_store_index_is_refused(run, tmp_path, capsys):
    root, out, _ = run
    index = root / "features" / "au" / "index.csv"
    rows = index.read_text().splitlines()
    with edited(index, lambda t: "\n".join([rows[0], *rows[2:], rows[1]]) + "\n"):  # e.g. re-extracted in another order
        _refused(capsys, out, tmp_path / "sub.csv", "features/au/index.csv changed")


def test_a_run_without_dataset_json_is_checked_against_its_config_with_a_warning(run, tmp_path):
    _, out, _ = run
    old = _copy(out, tmp_path / "old")
    (old / "dataset.json").unlink()
    with pytest.warns(UserWarning, match="no dataset.json.*cannot be detected"):
        assert submit_main([str(old), "--out", str(tmp_path / "sub.csv")]) == EXIT_OK
    assert submit_main([str(out), "--out", str(tmp_path / "new.csv")]) == EXIT_OK
    assert (tmp_path / "sub.csv").read_bytes() == (tmp_path / "new.csv").read_bytes()


def test_ensemble_signature_merges_streams_and_records_disagreement(run):
    root, out, _ = run
    a, b = dataset_signature(root, ["au", "mma"]), dataset_signature(root, ["mma", "audio"])
    shared = shared_signature({"a": a, "b": b})
    assert shared["agree"] and shared["streams"] == ["au", "audio", "mma"]
    assert differences(shared, dataset_signature(root, ["au", "audio", "mma"])) == []
    c = {**b, "labels": {"data_info.csv": "0" * 64}}
    split = shared_signature({"a": a, "c": c})
    assert split["agree"] is False and split["differences"] == {"a vs c": ["data_info.csv changed"]}


def test_muse2022_submission_rows_come_from_partition_csv(tmp_path):
    (tmp_path / "partition.csv").write_text("Id,Partition\n3,train\n10,test\n7,devel\n2,test\n")
    (tmp_path / "labels.csv").write_text("File_ID," + ",".join(EMOTIONS) + "\n3," + ",".join(["0.5"] * 7) + "\n")
    column, ids, path = submission_rows(tmp_path, "auto")
    assert (column, ids, path.name) == ("Id", ["10", "2"], "partition.csv")
