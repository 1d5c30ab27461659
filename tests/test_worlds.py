"""Worlds (`eri benchmark worlds`): named synthetic worlds that each change one hard thing of hume-small, and
the robustness table over them: every score with its interval, the best single stream chosen on val,
paired differences on the same test videos, and a rerun that trains nothing."""

import json

import numpy as np
import pandas as pd
import pytest

from eri.data.synthetic.knobs import PRESETS, WORLDS, world_preset
from eri.errors import ConfigError

SEEDS = 2


@pytest.fixture(scope="module")
def tiny_worlds(tmp_path_factory):
    """The whole benchmark at tiny size, through the command (6 worlds x 9 one-epoch runs)."""
    from eri.commands.benchmark import main

    base = tmp_path_factory.mktemp("worlds")
    argv = ["worlds", "--size", "tiny", "--seeds", str(SEEDS), "--data", str(base / "data"), "--out", str(base / "out")]
    assert main(argv) == 0
    return base, argv


def test_each_world_is_a_preset_that_changes_its_one_thing():
    assert len(WORLDS) >= 5 and "hume" in WORLDS
    for size, base in (("small", "hume-small"), ("tiny", "tiny")):
        assert world_preset("hume", size) == base
        changed = {w: {k for k in PRESETS[base] if PRESETS[world_preset(w, size)][k] != PRESETS[base][k]}
                   for w in WORLDS if w != "hume"}
        assert changed == {"long-clips": {"duration_min", "duration_max"}, "sparse-events": {"event_extra_mean"},
                           "heavy-nuisance": {"talk_rate", "talk_amp", "head_motion_amp", "noise"},
                           "few-train": {"n_train"}, "missing-faces": {"noface_frac", "noface_burst", "low_valid_frac"}}
    assert PRESETS["few-train-small"]["n_train"] == 400
    with pytest.raises(ConfigError, match="unknown world 'moon'"):
        world_preset("moon", "tiny")


def test_the_generated_worlds_show_their_change(tiny_worlds):
    base, _ = tiny_worlds
    stats = {w: json.loads((base / "data" / world_preset(w, "tiny") / "synthetic.json").read_text()) for w in WORLDS}
    assert stats["long-clips"]["video_stats"]["mean_duration_s"] > 20 > 16 > stats["hume"]["video_stats"]["mean_duration_s"]
    assert stats["few-train"]["counts"]["train"]["videos"] == 10 and stats["hume"]["counts"]["train"]["videos"] == 40
    faces = {w: stats[w]["video_stats"]["noface_frame_fraction_excl_low_valid"] for w in ("hume", "missing-faces")}
    assert faces["missing-faces"] > 0.15 > 0.02 > faces["hume"]
    videos = pd.read_csv(base / "data" / "long-clips-tiny" / "videos.csv")
    assert videos["duration"].between(20, 40).all()


def test_every_world_has_every_model_with_an_interval_and_a_ceiling(tiny_worlds):
    base, _ = tiny_worlds
    out = base / "out"
    rows = pd.read_csv(out / "worlds.csv")
    assert list(rows.columns[:6]) == ["world", "model", "test_mean_pcc", "ci_low", "ci_high", "ceiling"]
    assert set(rows["world"]) == set(WORLDS)
    for _, g in rows.groupby("world"):
        models = list(g["model"])
        assert len(models) == 6 and models[0] == "demo" and models[-1] == f"ensemble ({SEEDS} seeds)"
        assert models[2].startswith("best single stream (")
    assert (rows["ci_low"] <= rows["test_mean_pcc"]).all() and (rows["test_mean_pcc"] <= rows["ci_high"]).all()
    assert (rows["ceiling"] > 0.5).all()
    pairs = pd.read_csv(out / "worlds_paired.csv")
    assert len(pairs) == 3 * len(WORLDS) and ((pairs["ci_low"] <= pairs["diff"]) & (pairs["diff"] <= pairs["ci_high"])).all()
    assert (pairs["established"] == ((pairs["ci_low"] > 0) | (pairs["ci_high"] < 0))).all()
    md = (out / "worlds.md").read_text()
    assert all(w in md for w in WORLDS) and (out / "worlds.png").stat().st_size > 10_000


def test_the_best_single_stream_is_chosen_on_val_and_the_ensemble_is_the_seed_mean(tiny_worlds):
    from eri.benchmarks.worlds import STREAMS, jobs
    from eri.config import load_config
    from eri.runs import open_run
    from eri.training.cache import run_key
    from eri.training.metrics import score

    base, _ = tiny_worlds
    out = base / "out"
    world_jobs = jobs("hume", "tiny", str(base / "data"), SEEDS)
    run = {j.row: open_run(out / "runs" / run_key(load_config(j.config, j.overrides, j.updates))) for j in world_jobs}
    best = max((f"{s} only" for s in STREAMS), key=lambda n: run[n].metrics["val"]["mean_pcc"])
    rows = pd.read_csv(out / "worlds.csv").set_index(["world", "model"])
    chosen = rows.loc[("hume", f"best single stream ({best.split()[0]})")]
    assert chosen["test_mean_pcc"] == pytest.approx(run[best].metrics["test"]["mean_pcc"], abs=6e-5)
    ids = sorted(run["demo seed 0"].predictions("test").index)
    mean = np.mean([run[f"demo seed {s}"].predictions("test").loc[ids].to_numpy() for s in range(SEEDS)], axis=0)
    expected = score(mean, run["demo seed 0"].labels(ids))["mean_pcc"]
    assert rows.loc[("hume", f"ensemble ({SEEDS} seeds)"), "test_mean_pcc"] == pytest.approx(expected, abs=6e-5)


def test_a_rerun_trains_nothing_and_a_shard_trains_its_share(tiny_worlds, capsys):
    from eri.commands.benchmark import main

    base, argv = tiny_worlds
    runs = sorted(p.name for p in (base / "out" / "runs").iterdir() if p.is_dir())
    assert main(argv + ["--only", "hume"]) == 0
    assert sorted(p.name for p in (base / "out" / "runs").iterdir() if p.is_dir()) == runs  # all cached
    assert "cached" in capsys.readouterr().out
    shard_out = base / "shard"
    assert main(["worlds", "--size", "tiny", "--seeds", "1", "--only", "hume", "--data", str(base / "data"),
                 "--out", str(shard_out), "--shard", "1/2"]) == 0
    assert len([p for p in (shard_out / "runs").iterdir() if p.is_dir()]) == 4  # jobs 1, 3, 5, 7 of 8
    assert not (shard_out / "worlds.csv").exists()
    # --no-train writes what the shard finished and trains nothing: no demo seed 0 there, so no hume rows;
    # asking for more seeds than were trained leaves the ensemble (and its comparison) out, nothing else
    assert main(["worlds", "--size", "tiny", "--seeds", "1", "--only", "hume", "--data", str(base / "data"),
                 "--out", str(shard_out), "--no-train"]) == 0
    assert len([p for p in (shard_out / "runs").iterdir() if p.is_dir()]) == 4 and not (shard_out / "worlds.csv").exists()
    assert "no table written" in capsys.readouterr().out
    assert main(argv[:4] + [str(SEEDS + 1)] + argv[5:] + ["--only", "hume", "--no-train"]) == 0
    assert sorted(p.name for p in (base / "out" / "runs").iterdir() if p.is_dir()) == runs
    rows = pd.read_csv(base / "out" / "worlds.csv")
    assert list(rows["model"]) == ["demo", "previous demo", rows["model"][2], "mean pooling", "masked RNN (mma)"]
    assert list(pd.read_csv(base / "out" / "worlds_paired.csv")["b"]) == [rows["model"][2], "previous demo"]
    # one seed is the demo itself, not an ensemble: no such row, no "ensemble - demo" of exactly 0
    assert main(argv[:4] + ["1"] + argv[5:] + ["--only", "hume", "--no-train"]) == 0
    assert list(pd.read_csv(base / "out" / "worlds.csv")["model"]) == list(rows["model"])
