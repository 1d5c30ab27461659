"""Ensembles, cross-validation and the statistics that judge differences: the bootstrap against scipy,
deterministic (grouped) folds, combiners that are never scored on what they were fitted on, the
ensemble tool end to end on `tiny` (members reused through the run cache), and tools/compare.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st

from eri.constants import EMOTIONS
from eri.data.folds import apply_cv, assign_folds
from eri.data.labels import read_manifest
from eri.ensembles.combiners import COMBINERS, Combination, cross_fit, make_combiner, parts
from eri.ensembles.compare import compare
from eri.ensembles.config import load_ensemble_config
from eri.ensembles.ensemble import run_ensemble
from eri.errors import EXIT_INPUT, EXIT_OK, InputError
from eri.training.metrics import bootstrap_ci, bootstrap_counts, paired_bootstrap, pcc_per_emotion, resampled_pcc
from tools.compare import main as compare_main


def _data(n=300, seed=0, noise=0.6):
    rng = np.random.default_rng(seed)
    y = rng.uniform(size=(n, 7))
    return y, y + rng.normal(0, noise, (n, 7))


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_agrees_with_scipy_on_the_same_resamples():
    y, p = _data()
    ci = bootstrap_ci(p, y, resamples=400, seed=7)
    for j, e in enumerate(EMOTIONS):
        ref = st.bootstrap((p[:, j], y[:, j]), lambda a, b, axis: st.pearsonr(a, b, axis=axis).statistic, paired=True,
                           vectorized=True, n_resamples=400, method="percentile", rng=np.random.default_rng(7))
        np.testing.assert_allclose(ci["pcc"][e], [ref.confidence_interval.low, ref.confidence_interval.high], atol=1e-12)
    ref = st.bootstrap((np.arange(len(y)),), lambda i: pcc_per_emotion(p[i], y[i]).mean(), vectorized=False,
                       n_resamples=400, method="percentile", rng=np.random.default_rng(7))
    np.testing.assert_allclose(ci["mean_pcc"], [ref.confidence_interval.low, ref.confidence_interval.high], atol=1e-12)


def test_resampled_pcc_is_the_pcc_of_each_resample():
    y, p = _data(n=50)
    counts = bootstrap_counts(50, 5, seed=1)
    idx = np.random.default_rng(1).integers(0, 50, (5, 50))
    for b in range(5):
        np.testing.assert_allclose(resampled_pcc(p, y, counts)[b], pcc_per_emotion(p[idx[b]], y[idx[b]]), atol=1e-10)


def test_paired_bootstrap_difference_interval_and_p():
    y, p = _data(n=400)
    same = paired_bootstrap(p, p, y)
    assert same["mean_pcc"]["diff"] == 0 and same["mean_pcc"]["ci"] == [0, 0] and same["mean_pcc"]["p"] == 1.0
    better = y + np.random.default_rng(5).normal(0, 0.2, y.shape)
    d = paired_bootstrap(better, p, y)["mean_pcc"]
    assert d["diff"] > 0 and d["ci"][0] > 0 and d["excludes_0"] and d["p"] < 0.01
    twin = p + np.random.default_rng(6).normal(0, 0.02, p.shape)  # as good as p: no established difference
    assert not paired_bootstrap(twin, p, y)["mean_pcc"]["excludes_0"]
    seeds = paired_bootstrap(np.stack([better, better]), np.stack([p, p]), y)["mean_pcc"]  # (S, N, 7): seed means
    assert seeds["diff"] == pytest.approx(d["diff"])


# ----------------------------------------------------------------------------- folds
def test_folds_are_deterministic_disjoint_balanced_and_never_take_test(tiny_root):
    ids = [f"{i:05d}" for i in range(103)]
    f = assign_folds(ids, 5, seed=3)
    np.testing.assert_array_equal(f, assign_folds(list(reversed(ids)), 5, seed=3)[::-1])  # order-free
    assert sorted(np.bincount(f)) == [20, 20, 21, 21, 21] and not np.array_equal(f, assign_folds(ids, 5, seed=4))
    manifest = read_manifest(tiny_root)
    folds = [apply_cv(manifest, tiny_root, 4, k, ["train", "val"]) for k in range(4)]
    held = [set(m[m["split"] == "val"]["File_ID"]) for m in folds]
    pool = set(manifest[manifest["split"] != "test"]["File_ID"])
    assert set().union(*held) == pool and sum(map(len, held)) == len(pool)  # each pool video held out once
    for m in folds:
        assert set(m[m["split"] == "test"]["File_ID"]) == set(manifest[manifest["split"] == "test"]["File_ID"])
    with pytest.raises(InputError, match="never test"):
        apply_cv(manifest, tiny_root, 4, 0, ["train", "test"])


def test_grouped_folds_keep_subjects_apart(tiny_root):
    manifest = read_manifest(tiny_root)
    subject = pd.read_csv(tiny_root / "videos.csv", dtype={"File_ID": str}).set_index("File_ID")["subject"]
    seen = {}
    for k in range(3):
        m = apply_cv(manifest, tiny_root, 3, k, ["train", "val"], group_by="subject")
        for s in subject.loc[m[m["split"] == "val"]["File_ID"]]:
            assert seen.setdefault(s, k) == k  # a subject is held out in one fold only
        train_subjects = set(subject.loc[m[m["split"] == "train"]["File_ID"]])
        assert not train_subjects & set(subject.loc[m[m["split"] == "val"]["File_ID"]])


# ----------------------------------------------------------------------------- combiners
def test_combiners_shapes_and_choices():
    y, _ = _data(n=200)
    rng = np.random.default_rng(0)
    x = np.stack([y + rng.normal(0, s, y.shape) for s in (0.2, 1.0, 3.0)])  # a good, a weak, a useless member
    for name in COMBINERS:
        out = make_combiner(name).fit(x, y).predict(x)
        assert out.shape == y.shape and np.isfinite(out).all()
    assert (make_combiner("best").fit(x, y).choice == 0).all()
    w = make_combiner("weights").fit(x, y).w
    assert (w >= 0).all() and np.allclose(w.sum(0), 1) and (w[0] > w[2]).all()


def test_a_combiner_is_never_scored_on_what_it_was_fitted_on():
    """Twenty members of pure noise: stacking them in-sample "explains" val, but the tool only ever
    reports held-out (cross-fitted) predictions, which carry no signal, and recomputes exactly by hand."""
    rng = np.random.default_rng(1)
    y = rng.uniform(size=(120, 7))
    x_fit, x_test = rng.uniform(size=(20, 120, 7)), rng.uniform(size=(20, 50, 7))
    in_sample = pcc_per_emotion(make_combiner("stack").fit(x_fit, y).predict(x_fit), y).mean()
    held_out, _ = Combination("stack", k=5, seed=0).fit(x_fit, y, x_test)
    honest = pcc_per_emotion(held_out, y).mean()
    assert in_sample > 0.3 and honest < 0.1  # held out, noise shows no signal (cross-fitted ridge even dips below 0)
    by_hand = np.empty_like(y)
    part = parts(120, 5, 0)
    for j in range(5):
        by_hand[part == j] = make_combiner("stack").fit(x_fit[:, part != j], y[part != j]).predict(x_fit[:, part == j])
    np.testing.assert_array_equal(held_out, by_hand)
    np.testing.assert_array_equal(cross_fit("stack", x_fit, y, 5, 0), held_out)


# ----------------------------------------------------------------------------- the tool on tiny
TINY = ["trainer.max_epochs=1", "data.batch_size=8", "model.preset=tiny", "data.synthetic=tiny"]


@pytest.fixture(scope="module")
def ensembles(tiny_root, tmp_path_factory):
    """Two ensembles sharing one run cache: the demo over 2 seeds, and the demo over 3 grouped folds."""
    tmp = tmp_path_factory.mktemp("ensembles")
    common = [f"runs={tmp / 'cache'}", f"overrides=[data.root={tiny_root}, {', '.join(TINY)}]"]
    seeds = load_ensemble_config("configs/ensemble/demo_seeds.yaml", [*common, "members.0.seeds=[0, 1]", f"out={tmp / 'seeds'}"])
    folds = load_ensemble_config("configs/ensemble/demo_folds.yaml", [*common, "members.0.folds=3", f"out={tmp / 'folds'}"])
    return tmp, run_ensemble(seeds, progress=None), run_ensemble(folds, progress=None)


def test_ensemble_directory_holds_everything(ensembles):
    tmp, seeds, folds = ensembles
    for name, m in (("seeds", seeds), ("folds", folds)):
        out = tmp / name
        for f in ("config.yaml", "metrics.json", "predictions_val.csv", "predictions_test.csv", "members.csv", "members.png"):
            assert (out / f).exists(), f
        saved = json.loads((out / "metrics.json").read_text())
        assert {"val", "test", "members", "combiner", "mean_of_members"} <= set(saved)
        for split in ("val", "test"):
            lo, hi = saved[split]["ci95"]["mean_pcc"]
            assert lo <= saved[split]["mean_pcc"] <= hi and set(saved[split]["pcc"]) == set(EMOTIONS)
    assert [r["member"] for r in seeds["members"]] == ["demo/seed0", "demo/seed1"]
    assert set(seeds["combiners"]) == {"weights", "best", "stack"}  # every combiner, each scored held out
    assert len(list((tmp / "cache").glob("*/metrics.json"))) == 5  # 2 seed runs + 3 fold runs


def test_folds_give_out_of_fold_predictions_of_the_whole_pool(ensembles, tiny_root):
    tmp, _, folds = ensembles
    manifest = read_manifest(tiny_root)
    val = pd.read_csv(tmp / "folds" / "predictions_val.csv", dtype={"File_ID": str})
    assert set(val["File_ID"]) == set(manifest[manifest["split"] != "test"]["File_ID"])
    assert folds["fit_set"].startswith("out-of-fold") and len(folds["members"][0]["runs"].split()) == 3


def test_members_are_reused_and_a_foreign_member_is_refused(ensembles, tiny_root, tmp_path):
    tmp, seeds, _ = ensembles
    runs = sorted((tmp / "cache").glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    before = [p.stat().st_mtime_ns for p in runs]
    again = load_ensemble_config("configs/ensemble/demo_seeds.yaml", [
        f"runs={tmp / 'cache'}", f"overrides=[data.root={tiny_root}, {', '.join(TINY)}]", "members.0.seeds=[0, 1]",
        f"out={tmp_path / 'again'}"])
    assert run_ensemble(again, progress=None)["test"]["mean_pcc"] == pytest.approx(seeds["test"]["mean_pcc"])
    assert [p.stat().st_mtime_ns for p in runs] == before  # nothing retrained
    runs_ = [d for d in (tmp / "cache").iterdir() if d.is_dir()]
    fold_run = next(d for d in runs_ if "folds: 3" in (d / "config.yaml").read_text())
    plain = next(d for d in runs_ if "folds: null" in (d / "config.yaml").read_text())
    with pytest.raises(InputError, match="one fold of a cross-validation"):
        run_ensemble(load_ensemble_config(None, [f"out={tmp_path / 'x'}"], [str(plain), str(fold_run)]), progress=None)


def test_compare_pairs_the_same_videos_and_refuses_others(ensembles, capsys):
    tmp, _, _ = ensembles
    plain = sorted(d for d in (tmp / "cache").iterdir() if d.is_dir() and "folds: null" in (d / "config.yaml").read_text())
    assert compare_main([str(tmp / "seeds"), str(plain[0]), "--json", str(tmp / "cmp.json")]) == EXIT_OK
    out = capsys.readouterr().out
    res = json.loads((tmp / "cmp.json").read_text())
    assert "paired bootstrap" in out and res["videos"] == 16 and len(res["pcc"]) == 7
    assert res["mean_pcc"]["diff"] == pytest.approx(res["a_mean_pcc"] - res["b_mean_pcc"], abs=1e-9)
    assert compare_main([str(tmp / "folds"), str(plain[0]), "--split", "val"]) == EXIT_INPUT  # pool vs val split
    assert "do not cover the same val videos" in capsys.readouterr().err


def test_compare_and_ensemble_need_no_data_root_and_refuse_a_changed_store(ensembles, tiny_root, tmp_path, capsys):
    """Runs keep their labels and their data signature: after the data root moved away, two runs (copies
    of cached members, as if trained on a folder that then moved) still compare and ensemble; a run
    whose feature store differs is refused by signature, naming what changed. Nothing is trained."""
    tmp, _, _ = ensembles
    data = tmp_path / "data"
    shutil.copytree(tiny_root, data)
    plain = sorted(d for d in (tmp / "cache").iterdir() if d.is_dir() and "folds: null" in (d / "config.yaml").read_text())
    runs = []
    for k, src in enumerate(plain[:2]):
        runs.append(shutil.copytree(src, tmp_path / f"run{k}"))
        for f in ("config.yaml", "dataset.json"):
            (runs[-1] / f).write_text((runs[-1] / f).read_text().replace(str(tiny_root), str(data)))
    before = compare(*runs)
    data.rename(tmp_path / "moved")
    assert compare(*runs) == before and before["videos"] == 16
    assert compare_main([str(runs[0]), str(runs[1]), "--split", "val"]) == EXIT_OK
    assert "paired bootstrap" in capsys.readouterr().out
    ens = run_ensemble(load_ensemble_config(None, [f"out={tmp_path / 'ens'}"], [str(r) for r in runs]), progress=None)
    scored = compare(tmp_path / "ens", runs[0])["a_mean_pcc"]  # its labels.csv; its predictions saved to 6 decimals
    assert scored == pytest.approx(ens["test"]["mean_pcc"], abs=1e-5)
    sig = json.loads((runs[1] / "dataset.json").read_text())
    sig["features"]["au"]["index.csv"] = "0" * 64  # as if its store had been re-extracted
    (runs[1] / "dataset.json").write_text(json.dumps(sig))
    with pytest.raises(InputError, match="features/au/index.csv changed"):
        compare(*runs)
    with pytest.raises(InputError, match="member run1 was trained on other data than member run0: features/au/index.csv changed"):
        run_ensemble(load_ensemble_config(None, [f"out={tmp_path / 'ens2'}"], [str(r) for r in runs]), progress=None)


def test_sharded_processes_share_the_training_then_one_run_combines(ensembles, tiny_root, tmp_path):
    """`--shard K/N` trains every N-th member run; the unsharded rerun only reads the cache."""
    tmp, seeds, _ = ensembles
    cfg = lambda: load_ensemble_config("configs/ensemble/demo_seeds.yaml", [  # noqa: E731
        f"runs={tmp / 'cache'}", f"overrides=[data.root={tiny_root}, {', '.join(TINY)}]", "members.0.seeds=[0, 1, 2]",
        f"out={tmp_path / 'sharded'}"])
    before = set((tmp / "cache").glob("*/metrics.json"))
    assert run_ensemble(cfg(), progress=None, shard=(0, 2)) is None  # seeds 0 and 2: 0 cached, 2 trained
    assert len(set((tmp / "cache").glob("*/metrics.json")) - before) == 1 and not (tmp_path / "sharded").exists()
    assert run_ensemble(cfg(), progress=None, shard=(1, 2)) is None  # seed 1: cached
    trained = set((tmp / "cache").glob("*/metrics.json"))
    m = run_ensemble(cfg(), progress=None)
    assert set((tmp / "cache").glob("*/metrics.json")) == trained and len(m["members"]) == 3
    assert m["members"][0]["test_mean_pcc"] == pytest.approx(seeds["members"][0]["test_mean_pcc"])
