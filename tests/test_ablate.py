"""Ablation tables on the `tiny` preset: every table end to end, row caching by resolved config,
seeds (mean and std), failing rows, and the column slices the tables rely on."""

import json

import numpy as np
import pandas as pd
import pytest

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


@pytest.fixture(scope="module")
def all_tables(tmp_path_factory, tiny_root):
    out = tmp_path_factory.mktemp("ablate")
    code = ablate_main(["--table", "all", "--preset", "tiny", "--out", str(out), "--runs", str(out / "runs"),
                        "--data-root", str(tiny_root)])
    return out, code


def test_every_table_is_written(all_tables):
    out, code = all_tables
    assert code == 0
    for name, table in TABLES.items():
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
    # 36 rows, 34 distinct configs (two rows are shared between tables): one run directory each
    assert len(list((out / "runs").glob("*/metrics.json"))) == 34


def test_rerun_trains_nothing(all_tables, tiny_root):
    out, _ = all_tables
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")}
    for name in TABLES:
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
