"""The run directory (`eri.runs`): which kind a folder is, the labels a run keeps (cross-validated: its
held-out fold as val), one train-mean rule for training and for rebuilt specs, and the data module
built from its config section. No training here: a set-up data module writes what a run would."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
from conftest import tiny_overrides

from eri.config import DataConfig, load_config, streams_of, to_yaml
from eri.constants import EMOTIONS
from eri.data.datamodule import ERIDataModule
from eri.data.folds import apply_cv
from eri.data.labels import read_manifest, train_mean
from eri.errors import InputError
from eri.inference.predictor import _legacy_train_mean
from eri.runs import CONFIG, LABELS, MEMBERS, EnsembleRun, Run, open_run, read_labels, write_labels


def _module(tiny_root, tmp_path, *extra):
    cfg = load_config("configs/demo.yaml", tiny_overrides(tiny_root, tmp_path, "model.preset=tiny", *extra))
    dm = ERIDataModule.from_config(cfg, progress=False)
    dm.setup("fit")
    return cfg, dm


def _run_dir(path, cfg, dm):
    """What training writes about its data: config.yaml and labels.csv."""
    path.mkdir()
    (path / CONFIG).write_text(to_yaml(cfg))
    write_labels(path, dm.label_table())
    return path


def test_open_run_tells_a_run_from_an_ensemble_and_refuses_anything_else(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CONFIG).write_text("seed: 0\n")
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / CONFIG).write_text("combiner: mean\n")  # an ensemble has a config.yaml too
    (tmp_path / "ens" / MEMBERS).write_text("member,runs\n")
    (tmp_path / "empty").mkdir()
    assert isinstance(open_run(tmp_path / "run"), Run) and isinstance(open_run(tmp_path / "ens"), EnsembleRun)
    for name, why in (("empty", "neither config.yaml"), ("missing", "does not exist")):
        with pytest.raises(InputError, match=why) as e:
            open_run(tmp_path / name)
        assert len(str(e.value).splitlines()) == 1 and str(tmp_path / name) in str(e.value)
    with pytest.raises(InputError, match="no predictions_test.csv"):
        open_run(tmp_path / "run").predictions("test")


@pytest.mark.parametrize("cv", [False, True], ids=["plain", "fold 1 of 3"])
def test_a_run_keeps_the_labels_it_was_scored_on_and_the_train_mean_follows(tiny_root, tmp_path, cv):
    extra = ["data.cv.folds=3", "data.cv.fold=1"] if cv else []
    cfg, dm = _module(tiny_root, tmp_path, *extra)
    run = Run(_run_dir(tmp_path / "run", cfg, dm))
    table = read_labels(run.path / LABELS)
    manifest = read_manifest(tiny_root)
    if cv:
        manifest = apply_cv(manifest, tiny_root, 3, 1, ["train", "val"])
    for split in ("train", "val", "test"):  # every split, in order, bit for bit as read from the label file
        want = manifest[manifest["split"] == split]
        got = table[table["split"] == split]
        assert got.index.tolist() == want["File_ID"].tolist() == dm.splits[split].ids
        assert np.array_equal(got[list(EMOTIONS)].to_numpy(), want[list(EMOTIONS)].to_numpy(), equal_nan=True)
        assert got["usable"].astype(bool).tolist() == dm.splits[split].usable.tolist()
    assert np.array_equal(run.labels(dm.splits["val"].ids), manifest[manifest["split"] == "val"][list(EMOTIONS)].to_numpy())
    # one train-mean rule: from the saved labels, bit-identical to training's (the held-out fold left out)
    assert train_mean(table, table[table["split"] == "train"]["usable"]).tobytes() == dm.train_mean.tobytes()
    expected = [float(x) for x in dm.train_mean]
    assert _legacy_train_mean(run, dm.metas) == expected
    # a run written before runs kept their labels: its data.root, folds applied, with a one-line warning
    (run.path / LABELS).unlink()
    with pytest.warns(UserWarning, match=f"no {LABELS} .*labels read from") as w:
        old = Run(run.path)
        assert _legacy_train_mean(old, dm.metas) == expected
    assert len(str(w[0].message).splitlines()) == 1
    assert old.label_table["split"].value_counts().to_dict() == manifest["split"].value_counts().to_dict()


def test_the_data_module_is_built_from_every_data_key_it_takes(tiny_root, tmp_path):
    takes = set(inspect.signature(ERIDataModule.__init__).parameters) - {"self"}
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    # streams and crops come from model.branches (crops: the streams crop-reading encoders take), seed from seed
    assert takes - fields == {"streams", "crops", "seed", "progress"}, "a data module argument no config key sets"
    cfg = load_config("configs/demo.yaml", tiny_overrides(tiny_root, tmp_path, "data.batch_size=5", "data.eval_batch_size=7",
                                                          "data.min_valid_frames=9", "data.bucket=true", "data.cv.folds=4",
                                                          "data.cache=memmap", "seed=3"))
    dm = ERIDataModule.from_config(cfg, progress=False)
    assert (dm.batch_size, dm.eval_batch_size, dm.policy.min_valid_frames, dm.policy.frame_stride) == (5, 7, 9, 2)
    assert dm.bucket and dm.cache == "memmap" and dm.seed == 3 and dm.cv["folds"] == 4 and dm.streams == streams_of(cfg)
    assert str(dm.root) == str(tiny_root) and dm.synthetic == "tiny" and not dm.progress
