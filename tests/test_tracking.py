"""Experiment tracking: per-emotion PCC, the learning rate and the resolved config in every logger
(CSV, TensorBoard with its HParams summary, MLflow params/metrics/artifacts); one MLflow store shared
by runs and by the ensemble, search and ablation tools; and the servers that open it (`mlflow ui`,
optuna-dashboard)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_overrides

from eri.config import ConfigError, load_config
from eri.constants import EMOTIONS
from eri.tracking import ENV, artifact_location, experiment_id, flat_params, tracking_uri
from eri.training.run import train

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")  # the tests may change directory
QUICK = ["trainer.max_epochs=1", "data.batch_size=8", "model.preset=tiny"]
LOGGERS = {
    # 2 epochs with a StepLR halving the lr after each: the lr column must follow the schedule
    "csv": ["trainer.max_epochs=2", "optim.lr_step_epochs=1", "optim.lr_gamma=0.5"],
    "tensorboard": ["trainer.logger=tensorboard"],
    "mlflow-a": ["trainer.logger=mlflow"],
    "mlflow-b": ["trainer.logger=mlflow", "seed=1"],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_root, store) -> dict:
    """One finished run per logger; two MLflow runs (seeds 0 and 1) with the same tracking_uri."""
    base, out = tmp_path_factory.mktemp("runs"), {}
    for name, extra in LOGGERS.items():
        cfg = load_config(DEMO, tiny_overrides(tiny_root, base / name, *QUICK, *extra, f"trainer.tracking_uri={store}"))
        out[name] = (cfg, train(cfg), base / name)
    return out


def _client(store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


def test_csv_logs_per_emotion_pcc_the_lr_and_the_config(runs):
    cfg, metrics, out = runs["csv"]
    logs = pd.read_csv(out / "logs" / "version_0" / "metrics.csv")
    for split in ("val", "test"):
        for e in EMOTIONS:  # the last value logged is the best checkpoint's, as in metrics.json
            assert logs[f"{split}/pcc/{e}"].dropna().iloc[-1] == pytest.approx(metrics[split]["pcc"][e], abs=1e-6)
    np.testing.assert_allclose(logs["lr"].dropna(), [cfg.optim.lr, cfg.optim.lr * 0.5], rtol=1e-6)
    hparams = yaml.safe_load((out / "logs" / "version_0" / "hparams.yaml").read_text())
    assert hparams == flat_params(cfg)
    assert hparams["optim.lr"] == cfg.optim.lr
    assert hparams["model.branches.0.streams"] == json.dumps(list(cfg.model.branches[0].streams))


def test_tensorboard_holds_per_emotion_scalars_and_an_hparams_summary(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg, metrics, out = runs["tensorboard"]
    events = EventAccumulator(str(out / "logs" / "version_0")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {f"val/pcc/{e}" for e in EMOTIONS} | {f"test/pcc/{e}" for e in EMOTIONS} | {"lr", "val/mean_pcc"} <= scalars
    assert events.Scalars("val/pcc/Fear")[-1].value == pytest.approx(metrics["val"]["pcc"]["Fear"], abs=1e-6)
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(blob)
            for tag, blob in events.PluginTagToContent("hparams").items()}
    experiment = data["_hparams_/experiment"].experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/mean_pcc", "test/mean_pcc"]
    start = data["_hparams_/session_start_info"].session_start_info.hparams
    assert set(start) == set(flat_params(cfg))
    assert start["optim.lr"].number_value == pytest.approx(cfg.optim.lr)
    assert start["model.branches.0.encoder.name"].string_value == cfg.model.branches[0].encoder.name
    assert yaml.safe_load((out / "logs" / "version_0" / "hparams.yaml").read_text())["seed"] == cfg.seed


def test_mlflow_runs_share_one_store_with_params_metrics_and_artifacts(runs, store, tmp_path):
    client = _client(store)
    found = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("eri").experiment_id])}
    assert set(found) == {str(runs["mlflow-a"][2]), str(runs["mlflow-b"][2])}
    for name in ("mlflow-a", "mlflow-b"):
        cfg, metrics, out = runs[name]
        run = found[str(out)]
        assert run.data.params["seed"] == str(cfg.seed) and run.data.params["optim.lr"] == str(cfg.optim.lr)
        assert run.data.metrics["val/mean_pcc"] == pytest.approx(metrics["val"]["mean_pcc"], abs=1e-6)
        assert {f"val/pcc/{e}" for e in EMOTIONS} | {"lr", "test/mean_pcc"} <= set(run.data.metrics)
        assert {"config.yaml", "metrics.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        got = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))
        assert json.loads(open(got).read()) == json.loads((out / "metrics.json").read_text())
        assert not list(out.glob("*.db")) and not (out / "mlruns").exists()  # nothing per run: one store
    assert found[str(runs["mlflow-a"][2])].data.params["seed"] != found[str(runs["mlflow-b"][2])].data.params["seed"]


def test_the_store_is_one_setting_and_never_keeps_a_password(monkeypatch, tmp_path, tiny_root):
    monkeypatch.delenv(ENV, raising=False)
    assert tracking_uri() == "sqlite:///runs/mlflow.db"
    monkeypatch.setenv(ENV, "sqlite:///elsewhere.db")
    assert tracking_uri() == "sqlite:///elsewhere.db" and tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.chdir(tmp_path)  # the default is relative to the working directory, artifacts beside it
    experiment_id("sqlite:///runs/mlflow.db", "eri")
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    assert artifact_location("sqlite:///runs/mlflow.db") == (tmp_path / "runs" / "mlartifacts").as_uri()
    assert flat_params({"storage": "postgresql://me:s3cret@db/x"}) == {"storage": "postgresql://me:***@db/x"}
    cfg = load_config(DEMO, tiny_overrides(tiny_root, tmp_path / "run", *QUICK, "trainer.logger=mlflow",
                                          "trainer.tracking_uri=postgresql://me:s3cret@db/mlflow"))
    with pytest.raises(ConfigError, match=f"holds a password.*{ENV}") as e:
        train(cfg)
    assert "s3cret" not in str(e.value) and not (tmp_path / "run" / "config.yaml").exists()


def test_ensemble_search_and_ablation_tools_log_into_the_same_store(runs, store, monkeypatch, tmp_path, tiny_root):
    from tools.ablate import main as ablate_main
    from tools.ensemble import main as ensemble_main
    from tools.search import main as search_main

    monkeypatch.setenv(ENV, store)  # the tools' store: the environment's URI, as runs without trainer.tracking_uri
    ens = tmp_path / "ens"
    members = [str(runs["mlflow-a"][2]), str(runs["mlflow-b"][2])]
    assert ensemble_main(["--runs", *members, "--out", str(ens), "--mlflow"]) == 0
    study = tmp_path / "study"
    assert search_main(["--config", "configs/search/tiny.yaml", "--out", str(study), "--n-trials", "1", "--mlflow",
                        f"base_overrides.0=data.root={tiny_root}"]) == 0
    assert ablate_main(["--table", "004-table3", "--preset", "tiny", "--out", str(tmp_path / "ablate"),
                        "--runs", str(tmp_path / "cache"), "--data-root", str(tiny_root), "--mlflow"]) == 0
    client = _client(store)

    def only_run(experiment):
        found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        assert len(found) == 1
        return found[0], {a.path for a in client.list_artifacts(found[0].info.run_id)}

    run, files = only_run("eri-ensemble")
    saved = json.loads((ens / "metrics.json").read_text())
    assert run.data.metrics["val/mean_pcc"] == pytest.approx(saved["val"]["mean_pcc"])
    assert run.data.metrics["test/pcc/Fear"] == pytest.approx(saved["test"]["pcc"]["Fear"])
    assert run.data.params["combiner"] == "mean" and {"config.yaml", "metrics.json", "members.csv"} <= files
    run, files = only_run("eri-search")
    summary = json.loads((study / "summary.json").read_text())
    assert run.data.metrics["best_val_mean_pcc"] == pytest.approx(summary["best_val_mean_pcc"])
    assert run.data.params["n_trials"] == "1" and {"best.yaml", "summary.json", "trials.csv"} <= files
    run, files = only_run("eri-ablate")
    table = pd.read_csv(tmp_path / "ablate" / "004-table3" / "table.csv")
    assert run.info.run_name == "004-table3" and {"table.csv", "table.md"} <= files
    expected = table.set_index("row").loc["AU occurrence", "val_mean"]
    assert run.data.metrics["AU occurrence/val_mean"] == pytest.approx(expected, abs=1e-6)


def test_the_servers_open_the_stores(runs, store, monkeypatch, tmp_path):
    """`mlflow ui` (the full mlflow's server) serves the shared store; optuna-dashboard serves a study."""
    import click
    import optuna
    from mlflow.cli import cli
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR, app
    from optuna_dashboard import run_server, wsgi  # noqa: F401 (run_server: what `optuna-dashboard URL` calls)
    from optuna_dashboard._cli import main  # noqa: F401 (the optuna-dashboard command)
    from werkzeug.test import Client

    assert cli.get_command(click.Context(cli), "ui") is not None
    monkeypatch.setenv(BACKEND_STORE_URI_ENV_VAR, store)
    exp = _client(store).get_experiment_by_name("eri").experiment_id
    reply = app.test_client().post("/api/2.0/mlflow/runs/search", json={"experiment_ids": [exp]})
    assert reply.status_code == 200
    names = {r["info"]["run_name"]: r["info"]["run_id"] for r in reply.get_json()["runs"]}
    assert set(names) >= {str(runs["mlflow-a"][2]), str(runs["mlflow-b"][2])}
    out = runs["mlflow-a"][2]  # the UI's artifact view reads the files of the SQLite store's artifact folder
    reply = app.test_client().get(f"/get-artifact?path=metrics.json&run_uuid={names[str(out)]}")
    assert reply.status_code == 200 and json.loads(reply.get_data()) == json.loads((out / "metrics.json").read_text())

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="seen", storage=url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reply = Client(wsgi(url)).get("/api/studies")
    assert reply.status_code == 200
    assert [s["study_name"] for s in json.loads(reply.get_data())["study_summaries"]] == ["seen"]
