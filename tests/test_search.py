"""Optuna study over fusion choices, end to end on the `tiny` preset: SQLite (one process, with a
failing trial, the final retrain and plots), Ctrl-C then rerun, and two worker processes sharing a
real PostgreSQL server."""

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from eri.config import ConfigError, load_config, to_yaml
from eri.search.study import Search, Space, load_search_config, run_search, slots_used

TINY = "configs/search/tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cfg(root, out, *extra):
    return load_search_config(TINY, [f"out={out}", f"base_overrides.0=data.root={root}", *extra])


def _trials(scfg):
    return optuna.load_study(study_name=scfg.study_name, storage=scfg.storage).get_trials(deepcopy=False)


@pytest.mark.parametrize("path", [TINY, "configs/search/fusion.yaml"])
def test_paper_trial_reproduces_the_base_config(path, tmp_path):
    space = Space(load_search_config(path, [f"out={tmp_path}"]))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(space.paper_params())
    updates = space.updates(space.sample(study.ask()))
    base = load_config(space.base_path, [*space.base_overrides, "out=x"])
    assert to_yaml(space.trial_config(updates, "x")) == to_yaml(base)


def test_search_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="valid keys here: .*n_trials"):
        load_search_config(TINY, ["n_trial=3"])
    with pytest.raises(ConfigError, match="unknown key.*'widths'.*valid keys"):
        load_search_config(TINY, ["space.widths=[1]"])
    with pytest.raises(ConfigError, match="hidden = 16, outside the search space"):  # the tiny preset's width
        Space(load_search_config(TINY, ["space.hidden=[32, 64]"])).paper_params()
    with pytest.raises(ConfigError, match="pruner.name"):
        load_search_config(TINY, ["pruner.name=sometimes"])


@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory, tiny_root):
    """3 trials: the paper trial, one that fails (hidden 17 is not divisible by 2 heads), one sampled."""
    out = tmp_path_factory.mktemp("study")
    scfg = _cfg(tiny_root, out, "n_trials=3", "space.hidden=[16, 17]")
    search = Search(scfg, progress=None)
    study = search._study(0)
    study.enqueue_trial(search.space.paper_params(), user_attrs={"paper": True})
    study.enqueue_trial({"streams": "au", "au.encoder": "gru_transformer", "au.hidden": 17})
    result = run_search(scfg, progress=None)
    return scfg, result


def test_study_runs_every_trial_once_and_records_failures(sqlite_study):
    scfg, result = sqlite_study
    trials = _trials(scfg)
    assert [t.number for t in trials] == [0, 1, 2] and slots_used(trials) == 3
    assert trials[0].user_attrs["paper"] and trials[0].state == TrialState.COMPLETE
    assert trials[1].state == TrialState.FAIL and "divisible" in trials[1].user_attrs["error"]
    assert trials[2].state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for t in trials:  # each trial trained in its own run directory
        assert t.user_attrs["run_dir"].endswith(f"trials/{t.number:04d}")
    assert json.loads(Path(trials[0].user_attrs["run_dir"], "metrics.json").read_text())["val"][
        "mean_pcc"
    ] == pytest.approx(trials[0].value, abs=1e-9)
    assert result["worker"]["trials_run"] == 3 and result["worker"]["trials_per_hour"] > 0


def test_best_config_is_written_retrained_and_plotted(sqlite_study):
    scfg, result = sqlite_study
    out = Path(scfg.out)
    best = max((t for t in _trials(scfg) if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert result["best_trial"] == best.number
    cfg = load_config(out / "best.yaml")  # a ready-to-run training config
    assert cfg.out == str(out / "best")
    # retrained from scratch with the same seed: the same val score as the trial (deterministic on CPU)
    assert result["retrain"]["val"] == pytest.approx(best.value, abs=1e-6)
    assert json.loads((out / "best" / "metrics.json").read_text())["test"]["mean_pcc"] == result["retrain"]["test"]
    for name in ("optimization_history", "parallel_coordinate", "param_importances"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000, result["plots"][name]
    assert len((out / "trials.csv").read_text().splitlines()) == 4
    again = run_search(scfg, progress=None)  # a finished study: nothing more runs, the final step is reused
    assert again["worker"]["trials_run"] == 0 and len(_trials(scfg)) == 3 and again["retrain"] == result["retrain"]


def test_interrupted_study_continues_on_rerun(tmp_path, tiny_root):
    # enough epochs that the interrupt surely lands mid-training, however fast the machine
    scfg = _cfg(tiny_root, tmp_path, "n_trials=1", "base_overrides.3=trainer.max_epochs=20")
    cmd = [
        sys.executable,
        "tools/search.py",
        "--config",
        TINY,
        "--out",
        str(tmp_path),
        "--n-trials",
        "1",
        "--no-final",
        f"base_overrides.0=data.root={tiny_root}",
        "base_overrides.3=trainer.max_epochs=20",
    ]
    # a job started in the background by a non-interactive shell (as CI may run us) inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler: give the worker the default disposition back
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpt = tmp_path / "trials" / "0000" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGINT)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, log[-3000:]
    trials = _trials(scfg)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # interrupted, its retry queued
    result = run_search(scfg, final=False, progress=None)
    trials = _trials(scfg)
    assert result["worker"]["trials_run"] == 1 and slots_used(trials) == 1 and len(trials) == 2
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == trials[0].params
    assert retry.user_attrs["run_dir"] == trials[0].user_attrs["run_dir"]  # resumed where it stopped
    assert len(list(Path(retry.user_attrs["run_dir"], "logs").glob("version_*"))) == 2
    # resumed from the last finished epoch, not from scratch: the two attempts together cover the 20 epochs once
    # (an epoch interrupted after its report but before its checkpoint is reported twice)
    done, rest = len(trials[0].intermediate_values), len(retry.intermediate_values)
    assert retry.state == TrialState.COMPLETE and 1 <= done and rest < 20 and 20 <= done + rest <= 21


def test_two_workers_share_a_postgres_study(tmp_path, tiny_root, local_postgres):
    """Also: a password in the URL (ignored by the test server's trust auth) is never printed."""
    pg = local_postgres  # tests/local_postgres.py, stopped after the test
    url = pg.url.replace("postgres@", "postgres:s3cret@")
    cmd = [
        sys.executable,
        "tools/search.py",
        "--config",
        TINY,
        "--storage",
        url,
        "--n-trials",
        "4",
        "--out",
        str(tmp_path),
        "--no-final",
        f"base_overrides.0=data.root={tiny_root}",
    ]
    procs = [
        subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert all("s3cret" not in log for log in logs) and any(":***@" in log for log in logs)
    runs = [int(re.findall(r"this worker\W+(\d+) trial\(s\)", log)[-1]) for log in logs]  # the final table
    trials = optuna.load_study(study_name="tiny", storage=pg.url).get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and sum(runs) == 4  # none lost, none run twice
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials)
    assert sum(bool(t.user_attrs.get("paper")) for t in trials) == 1
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4


def test_pruning_stops_a_poor_trial_during_training(tmp_path, tiny_root):
    """The Lightning callback reports val mean PCC per epoch; the median pruner stops a trial below
    the earlier trials' epoch-0 values (only fit epochs are reported, not the final re-validation)."""
    from optuna.distributions import FloatDistribution

    from eri.search.study import _make_pruner, pruning_callback
    from eri.training.run import train

    scfg = _cfg(tiny_root, tmp_path, "pruner.n_startup_trials=1", "pruner.n_warmup_steps=0")
    study = optuna.create_study(direction="maximize", pruner=_make_pruner(scfg.pruner, 2))
    for v in (0.99, 0.98):
        study.add_trial(
            optuna.create_trial(
                value=v,
                params={"x": 0.5},
                distributions={"x": FloatDistribution(0, 1)},
                intermediate_values={0: v, 1: v},
            )
        )
    cfg = Space(scfg).trial_config({}, tmp_path / "run", ["trainer.progress_bar=false", "trainer.max_epochs=2"])
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="epoch 0"):
        train(cfg, callbacks=[pruning_callback(trial)])
    assert list(study.trials[-1].intermediate_values) == [0]
    assert (
        type(_make_pruner(load_search_config(TINY, ["pruner.name=hyperband"]).pruner, 6)).__name__ == "HyperbandPruner"
    )


def test_search_configs_compose_and_name_their_training_config_with_base(tmp_path):
    """A search file's base: other search files compose under it; a training config (found beside it,
    else from the working directory) is the config searched over, as base: has always meant there."""
    (tmp_path / "train.yaml").write_text("base: configs/demo.yaml\noptim.lr: 0.002\n")
    (tmp_path / "more.yaml").write_text(f"base: [{TINY}, train.yaml]\nn_trials: 9\n")
    scfg, tiny = load_search_config(tmp_path / "more.yaml"), load_search_config(TINY)
    assert tiny.base == "configs/demo.yaml" and scfg.base == str(tmp_path / "train.yaml")
    assert (scfg.n_trials, scfg.study_name, scfg.space, scfg.base_overrides) == (9, "more", tiny.space, tiny.base_overrides)
    space = Space(scfg)
    assert space.base.optim.lr == 0.002 and space.base.model.branches[0].encoder.hidden == 16  # tiny's base_overrides
    assert space.paper_params()["lr"] == 0.002
    (tmp_path / "bad.yaml").write_text("base: configs/mma/demo.yaml\n")
    with pytest.raises(ConfigError, match="bad.yaml: base configs/mma/demo.yaml is not a search config"):
        load_search_config(tmp_path / "bad.yaml")
