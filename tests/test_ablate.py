"""Ablation tables on the `tiny` preset: every table end to end, row caching by resolved config,
seeds (mean and std), failing rows, and the column slices the tables rely on. Table 000-e2e (its own data:
face videos) has its own tests at the end, names holding ``mma_e2e``."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import faces_preset
from eri.data.datamodule import ERIDataModule
from eri.data.store import FeatureStore
from eri.search.ablate import TABLES, Row, Table, resolve, run_table
from eri.training.cache import run_key
from tools.ablate import main as ablate_main


def test_column_slices_select_the_papers_feature_groups(tiny_root):
    """paper 000's VA + AU = mma columns 0-1 and 9-25 in one branch; paper 004's AU intensity = au 0-16."""
    table = TABLES["000-table3"]
    cfg = resolve(table, next(r for r in table.rows if r.name == "VA + AU"), "tiny", 0, data_root=str(tiny_root))
    specs = list(cfg.model.branches[0].streams)
    assert specs == ["mma[0:2]", "mma[9:26]"]
    dm = ERIDataModule(tiny_root, specs + ["au[0:17]"], drop_invalid_frames=True, progress=False)
    dm.setup()
    assert dm.stream_dims == {"mma[0:2]": 2, "mma[9:26]": 17, "au[0:17]": 17}
    vid = dm.splits["train"].ids[dm.datasets["train"].positions[0]]
    raw, valid = FeatureStore(tiny_root).load("mma", vid)
    np.testing.assert_array_equal(dm.datasets["train"].arrays["mma[0:2]"][0], raw[valid][:, 0:2])
    np.testing.assert_array_equal(dm.datasets["train"].arrays["mma[9:26]"][0], raw[valid][:, 9:26])


def test_row_configs_follow_the_papers_choices(tiny_root):
    t3 = TABLES["004-table3"]
    occ = resolve(t3, t3.rows[0], "hume-small", 0)
    assert [list(b.streams) for b in occ.model.branches] == [["holistic", "au[17:34]"], ["audio"]]
    t000 = TABLES["000-table3"]
    by_name = {r.name: resolve(t000, r, "hume-small", 0) for r in t000.rows}
    paper = by_name["VA + EXPR + AU (MMA-MRNNet)"]
    enc = paper.model.branches[0].encoder
    assert enc.mask and enc.routing and dict(paper.loss) == {"pcc": 1.0}
    assert not by_name["without Mask layer"].model.branches[0].encoder.mask
    assert not by_name["without routing"].model.branches[0].encoder.routing
    assert dict(by_name["MSE loss instead of PCC loss"].loss) == {"l2": 1.0}
    # the same config gives the same run whatever table it is in; the seed changes it
    t2 = TABLES["004-table2"]
    assert run_key(resolve(t3, t3.rows[2], "tiny", 0)) == run_key(resolve(t2, t2.rows[-1], "tiny", 0))
    assert run_key(resolve(t3, t3.rows[2], "tiny", 0)) != run_key(resolve(t3, t3.rows[2], "tiny", 1))


def test_cache_key_follows_the_synthetic_generator(monkeypatch):
    """A recalibrated generator (same config, other knobs) must not be served runs trained on the old data."""
    from eri.data import synthetic

    t = TABLES["000-table3"]
    before = run_key(resolve(t, t.rows[0], "tiny", 0))
    tiny = {**synthetic.PRESETS["tiny"], "visibility": {**synthetic.PRESETS["tiny"]["visibility"], "mma": [0.1] * 7}}
    monkeypatch.setitem(synthetic.PRESETS, "tiny", tiny)
    assert run_key(resolve(t, t.rows[0], "tiny", 0)) != before


FEATURE_TABLES = {n: t for n, t in TABLES.items() if not t.data}  # what --table all runs


@pytest.fixture(scope="module")
def all_tables(tmp_path_factory, tiny_root):
    out = tmp_path_factory.mktemp("ablate")
    code = ablate_main(["--table", "all", "--preset", "tiny", "--out", str(out), "--runs", str(out / "runs"),
                        "--data-root", str(tiny_root)])
    return out, code


def test_every_table_is_written(all_tables):
    out, code = all_tables
    assert code == 0 and "000-e2e" not in FEATURE_TABLES and not (out / "000-e2e").exists()
    for name, table in FEATURE_TABLES.items():
        folder = out / name
        df = pd.read_csv(folder / "table.csv")
        assert df["row"].tolist() == [r.name for r in table.rows] and (df["seeds"] == 1).all()
        md = (folder / "table.md").read_text()
        for r in table.rows:
            assert r.name in md and (r.paper is None or f"{r.paper:.3f}" in md)
        assert "\\begin{tabular}" in (folder / "table.tex").read_text()
        assert (folder / "bar.png").stat().st_size > 1000
        for _, row in df.iterrows():  # the table's numbers are the run's metrics
            metrics = json.loads((out / "runs" / row["runs"] / "metrics.json").read_text())
            assert row["val_mean"] == pytest.approx(metrics["val"]["mean_pcc"], abs=1e-6)
            if row["row"] == table.reference:  # every other row carries its paired difference from the reference
                assert np.isnan(row["test_diff"])
            else:
                ref = df.set_index("row").loc[table.reference, "test_mean"]
                assert row["test_diff"] == pytest.approx(row["test_mean"] - ref, abs=1e-4)  # from the CSVs' 6 decimals
                assert row["test_diff_lo"] <= row["test_diff"] <= row["test_diff_hi"]
        assert "test vs reference, 95% CI" in md and f"{table.reference} (reference)" in md
        # the note under the table sorts every compared row by what its interval establishes
        said = md.split("paired 95% CI: ")[1].strip()
        kinds = ("better (established)", "worse (established)", "within the noise, no difference established")
        groups = {k: said.split(k + ": ")[1].split(". ")[0].rstrip(".").split("; ") for k in kinds if k + ": " in said}
        for _, row in df[df["row"] != table.reference].iterrows():
            kind = kinds[2] if not row["test_diff_excludes_0"] else kinds[0] if row["test_diff"] > 0 else kinds[1]
            assert row["row"] in groups[kind]
    # 48 rows, 42 distinct configs (rows shared between tables, e.g. 004 Table 2's "all three" = Table 3's
    # "both" = demo-variants' paper-004 row, are trained once): one run directory each
    assert len(list((out / "runs").glob("*/metrics.json"))) == 42


def test_rerun_trains_nothing(all_tables, tiny_root):
    out, _ = all_tables
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")}
    for name in FEATURE_TABLES:
        assert run_table(TABLES[name], preset="tiny", out=out, data_root=str(tiny_root), progress=None,
                         runs=out / "runs")["trained"] == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")} == before


def test_seeds_changed_rows_and_failing_rows(tmp_path, tiny_root):
    rows = [
        Row("au", None, {"visual": ["au"]}),
        Row("mma", None, {"visual": ["mma"]}),
        Row("bad", None, {"visual": ["nosuch"]}),
    ]
    kw = dict(preset="tiny", seeds=2, out=tmp_path, data_root=str(tiny_root), progress=None, runs=tmp_path / "runs")
    first = run_table(Table("t", "test table", "004", rows), **kw)
    assert first["trained"] == 4
    au = first["rows"][0]
    vals = [
        json.loads((tmp_path / "runs" / h / "metrics.json").read_text())["val"]["mean_pcc"] for h in au["runs"].split()
    ]
    assert len(set(vals)) == 2  # two seeds, two different runs
    assert au["val_mean"] == pytest.approx(np.mean(vals)) and au["val_std"] == pytest.approx(np.std(vals, ddof=1))
    bad = first["rows"][2]
    assert bad["seeds"] == 0 and "nosuch" in bad["error"] and "failed" in (tmp_path / "t" / "table.md").read_text()
    rows[1] = Row("mma", None, {"visual": ["mma"]}, overlay={"optim.lr": 0.002})  # only this row changed
    again = run_table(Table("t", "test table", "004", rows), **kw)
    assert again["trained"] == 2 and again["rows"][0]["val_mean"] == au["val_mean"]


# ------------------------------------------------------------------------------ 000-e2e: regime 1 against end to end
@pytest.fixture(scope="module")
def e2e_table(faces_root, tmp_path_factory):
    """Table 000-e2e at `tiny` on tiny-faces shrunk to 14 short videos (conftest.FACES), 1 epoch, 1 seed, then rerun."""
    out = tmp_path_factory.mktemp("e2e")
    (out / "faces").symlink_to(faces_root, target_is_directory=True)
    argv = ["--table", "000-e2e", "--preset", "tiny", "--out", str(out), "--runs", str(out / "runs"),
            "--data-root", str(out / "faces")]
    with faces_preset():
        code = ablate_main(argv)
        mma = {p: p.stat().st_mtime_ns for p in (out / "runs" / "000-e2e").rglob("*.ckpt")}
        again = run_table(TABLES["000-e2e"], preset="tiny", out=out, data_root=str(out / "faces"), progress=None,
                          runs=out / "runs")
        assert {p: p.stat().st_mtime_ns for p in (out / "runs" / "000-e2e").rglob("*.ckpt")} == mma
    return out, code, again


def test_mma_e2e_table_trains_its_rows_against_regime_1(e2e_table):
    out, code, again = e2e_table
    table = TABLES["000-e2e"]
    assert code == 0 and again["trained"] == 0  # the rerun reads every row and the shared files
    df = pd.read_csv(out / "000-e2e" / "table.csv").set_index("row")
    assert df.index.tolist() == [r.name for r in table.rows] and table.reference == df.index[0]
    assert (df["seeds"] == 1).all() and df["error"].isna().all() and np.isfinite(df["val_mean"]).all()
    assert df["test_diff"].iloc[1:].notna().all() and np.isnan(df["test_diff"].iloc[0])
    configs = {r: json.loads((out / "runs" / df.loc[r, "runs"] / "metrics.json").read_text()) for r in df.index}
    assert all(np.isfinite(m["test"]["mean_pcc"]) for m in configs.values())


def _run_state(out, df, row):
    from eri.io import load_torch

    return load_torch(out / "runs" / df.loc[row, "runs"] / "model.ckpt")["state_dict"]


def test_mma_e2e_table_frozen_row_is_regime_1s_path(e2e_table):
    """The backbone-frozen row ends with the checkpoint's MMA net (BatchNorm statistics included), while
    regime 2's has moved; and its RNN reads regime 1's stream (same crops, same standardisation)."""
    import torch

    import eri
    from eri.data.crops import read_crops
    from eri.io import load_torch
    from eri.search.e2e_table import REFERENCE, ROWS

    out, _, _ = e2e_table
    df = pd.read_csv(out / "000-e2e" / "table.csv").set_index("row")
    ckpt = next((out / "runs" / "000-e2e").glob("mma-*/checkpoints/best-*.ckpt"))
    start = {k[len("model."):]: v for k, v in load_torch(ckpt)["state_dict"].items() if k.startswith("model.")}
    prefix = "model.branches.face.encoder.mma."
    frozen, regime2 = _run_state(out, df, ROWS[3][0]), _run_state(out, df, ROWS[1][0])
    assert {k[len(prefix):] for k in frozen if k.startswith(prefix)} == set(start)
    for k, v in start.items():
        torch.testing.assert_close(frozen[prefix + k], v, rtol=0, atol=0)
    assert any(not torch.equal(regime2[prefix + k], v) for k, v in start.items() if v.is_floating_point())
    regime1 = _run_state(out, df, REFERENCE)
    mean, std = regime1["model.branches.mma.mean"], regime1["model.branches.mma.std"]
    torch.testing.assert_close(frozen["model.branches.face.encoder.feat_mean"], mean)
    # the frozen row's per-frame RNN input, un-standardised, is the stored regime-1 stream of the same video
    enc = eri.load_model(out / "runs" / df.loc[ROWS[3][0], "runs"]).model.branches["face"].encoder.eval()
    stream = next(p.name for p in (out / "faces" / "features").iterdir() if p.name.startswith("mma_"))
    vid = FeatureStore(out / "faces").index(stream)["File_ID"].astype(str).iloc[0]
    pixels, valid, _ = read_crops(out / "faces", "crops", vid)
    x = torch.as_tensor(pixels[valid].reshape(1, int(valid.sum()), -1), dtype=torch.float32)
    with torch.no_grad():
        feats = enc.frame_features(x, torch.tensor([x.shape[1]]))[0] * std + mean
    raw, ok = FeatureStore(out / "faces").load(stream, vid)
    torch.testing.assert_close(feats, torch.as_tensor(raw[ok], dtype=torch.float32), rtol=0, atol=2e-3)


def test_mma_e2e_batchnorm_shift_measures_training_mode_against_the_checkpoint(e2e_table, tmp_path):
    """`eri benchmark e2e-batchnorm` on the table's checkpoint and crops: training-mode BatchNorm moves the
    outputs (shift > 0, correlation < 1) over every valid frame of the videos asked for; no crops: one line."""
    from eri.benchmarks.e2e import batchnorm_shift
    from eri.data.crops import read_crops
    from eri.errors import InputError

    out, _, _ = e2e_table
    ckpt = next((out / "runs" / "000-e2e").glob("mma-*/checkpoints/best-*.ckpt"))
    res = batchnorm_shift(out / "faces", ckpt, videos=3, chunk=64)
    ids = FeatureStore(out / "faces").index("crops")["File_ID"].astype(str).tolist()[:3]
    assert res["videos"] == 3 and res["frames"] == sum(int(read_crops(out / "faces", "crops", v)[1].sum()) for v in ids)
    assert res["shift_sd"] > 0.01 and -1 <= res["frame_corr"] < 0.999 and -1 <= res["video_mean_corr"] <= 1


def test_mma_e2e_table_real_preset_names_what_is_missing(e2e_table, tmp_path):
    from eri.errors import ConfigError

    out, _, _ = e2e_table
    kw = dict(preset="real", out=tmp_path, data_root=str(tmp_path), progress=None, runs=tmp_path / "runs")
    with pytest.raises(ConfigError, match="needs your MMA checkpoint: --mma-checkpoint"):
        run_table(TABLES["000-e2e"], **kw)
    ckpt = next((out / "runs" / "000-e2e").glob("mma-*/checkpoints/best-*.ckpt"))
    with pytest.raises(ConfigError, match=r"needs the face crops: .*features/crops not found"):
        run_table(TABLES["000-e2e"], **kw, inputs={"mma_checkpoint": str(ckpt)})


def test_demo_variants_rows_are_the_worlds_runs():
    """The demo table's previous-demo, single-stream, pooling and masked-RNN rows are the worlds benchmark's
    hume-small runs (one run-cache key each), and its paper-004 row is 004 Table 2's: each trained once."""
    from eri.benchmarks.worlds import jobs
    from eri.config import load_config

    table = TABLES["demo-variants"]
    keys = {r.name: run_key(resolve(table, r, "hume-small", 0)) for r in table.rows}
    worlds = {j.row: run_key(load_config(j.config, j.overrides, j.updates)) for j in jobs("hume", "small", "data", 1)}
    shared = {w: keys[t] for t in keys for w in worlds if worlds[w] == keys[t]}
    assert shared == {w: worlds[w] for w in ("demo seed 0", "previous demo", "holistic only", "au only", "audio only",
                                             "mma only", "mean pooling", "masked RNN (mma)")}
    t2 = TABLES["004-table2"]
    assert keys["paper 004's streams (holistic+au, audio), regression token"] == run_key(resolve(t2, t2.rows[-1], "hume-small", 0))
    assert len(set(keys.values())) == len(keys) == 12
    assert keys[table.reference] == run_key(resolve(TABLES["004-demo-authors"], TABLES["004-demo-authors"].rows[0], "hume-small", 0))
