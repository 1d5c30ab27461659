"""End to end on the `tiny` synthetic preset: a real Lightning run of the shipped configs."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_random_dataset, tiny_overrides

from eri.config import ConfigError, load_config, streams_of
from eri.constants import EMOTIONS, STREAMS
from eri.training.run import evaluate, read_logs, train

# the end-to-end config reads face crops, not features: tests/test_mma_e2e.py trains it on tiny-faces
CONFIGS = sorted(c for c in Path("configs").glob("*.yaml") if c.stem != "mma_mrnnet_e2e")
WIDTHS = {name: s["dim"] for name, s in STREAMS.items()}


def _run(tmp_path, tiny_root, name="demo", *extra):
    cfg = load_config(f"configs/{name}.yaml", tiny_overrides(tiny_root, tmp_path, *extra))
    return train(cfg), tmp_path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_root):
    return _run(tmp_path_factory.mktemp("demo"), tiny_root, "demo", "trainer.max_epochs=3", "data.batch_size=8")


def test_run_directory_holds_everything(demo_run, tiny_root):
    metrics, out = demo_run
    for f in ["config.yaml", "metrics.json", "predictions_val.csv", "predictions_test.csv", "logs/version_0/metrics.csv",
              "checkpoints/last.ckpt", "model.ckpt"]:
        assert (out / f).exists(), f
    spec = torch.load(out / "model.ckpt", weights_only=True)["eri_model"]  # the model travels with what it needs
    for stream in ("holistic", "au", "mma", "audio"):
        assert spec["streams"][stream] == json.loads((tiny_root / "features" / stream / "meta.json").read_text())
    assert spec["policy"] == {"drop_invalid_frames": True, "min_valid_frames": 50, "frame_stride": 2}
    assert spec["stats"]["au"]["mean"].shape == (34,) and len(spec["train_mean"]) == 7
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= {"val", "test", "ceiling", "checkpoint"}
    for split in ("val", "test"):
        assert set(saved[split]["pcc"]) == set(EMOTIONS)
        assert saved[split]["mean_pcc"] == pytest.approx(np.mean(list(saved[split]["pcc"].values())))
    synth = json.loads((tiny_root / "synthetic.json").read_text())
    assert saved["ceiling"] == {"val": synth["ceiling"]["val"], "test": synth["ceiling"]["test"]}
    # the resolved config reproduces the run's settings
    assert load_config(out / "config.yaml").model == load_config(out / "config.yaml").model


def test_predictions_cover_every_video_and_fill_invalid_ones_with_train_mean(demo_run, tiny_root):
    _, out = demo_run
    info = pd.read_csv(tiny_root / "data_info.csv", dtype={"File_ID": str})
    train_labels = info[info["Split"] == "Train"]
    for split in ("val", "test"):
        pred = pd.read_csv(out / f"predictions_{split}.csv", dtype={"File_ID": str})
        ids = info[info["Split"] == split.capitalize()]["File_ID"].str.strip("[]")
        assert pred["File_ID"].tolist() == ids.tolist() and list(pred.columns[1:]) == list(EMOTIONS)
        assert pred[list(EMOTIONS)].to_numpy().min() >= 0 and pred[list(EMOTIONS)].to_numpy().max() <= 1
    # a video with < 50 valid frames gets the mean of the usable training labels
    index = pd.read_csv(tiny_root / "features" / "holistic" / "index.csv", dtype={"File_ID": str})
    short = set(index[index["n_valid"] < 50]["File_ID"])
    pred = pd.read_csv(out / "predictions_test.csv", dtype={"File_ID": str}).set_index("File_ID")
    short_test = sorted(short & set(pred.index))
    assert short_test, "the tiny preset must hold a short video in test"
    usable_train = train_labels[~train_labels["File_ID"].str.strip("[]").isin(short)]
    np.testing.assert_allclose(pred.loc[short_test[0]].to_numpy(), usable_train[list(EMOTIONS)].mean().to_numpy(), atol=1e-6)


def test_test_is_scored_with_the_best_checkpoint(demo_run):
    metrics, out = demo_run
    logs = read_logs(out)
    per_epoch = logs.dropna(subset=["val/mean_pcc"]).groupby("epoch")["val/mean_pcc"].first()
    assert metrics["val"]["mean_pcc"] == pytest.approx(per_epoch.max(), abs=1e-6)
    best_epoch = int(per_epoch.idxmax())
    assert metrics["checkpoint"] == f"checkpoints/best-epoch={best_epoch:03d}.ckpt"
    again = evaluate(out)
    assert again["test"]["mean_pcc"] == pytest.approx(metrics["test"]["mean_pcc"], abs=1e-6)


def test_same_seed_same_numbers(demo_run, tmp_path, tiny_root):
    metrics, _ = demo_run
    again, _ = _run(tmp_path, tiny_root, "demo", "trainer.max_epochs=3", "data.batch_size=8")
    assert again["val"] == metrics["val"] and again["test"] == metrics["test"]


def test_determinism_is_strict_on_cpu_and_warns_where_a_gpu_lacks_deterministic_kernels(monkeypatch):
    """trainer.deterministic: strict on the CPU (the same numbers); on a GPU "warn", since torch has no
    deterministic CUDA backward for AdaptiveAvgPool2d (the MMA CNN), where strict mode raises."""
    from eri.training.skeleton import trainer_determinism

    t = load_config("configs/demo.yaml").trainer
    assert trainer_determinism(_with(t, accelerator="cpu")) is True
    assert trainer_determinism(_with(t, accelerator="gpu")) == "warn"
    assert trainer_determinism(_with(t, accelerator="cpu", deterministic=False)) is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trainer_determinism(_with(t, accelerator="auto")) == "warn"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer_determinism(_with(t, accelerator="auto")) is True


def _with(t, **kw):
    from omegaconf import OmegaConf

    return OmegaConf.merge(t, kw)


def test_preparing_data_in_the_run_draws_nothing_from_its_seed(faces_root):
    """A run that generates its videos and extracts their crops (the first run on a *-faces preset) gets the
    same random numbers after its seed as a rerun on the finished data, so both give the same numbers."""
    import lightning as L
    from conftest import FACES_RNG, _draws

    L.seed_everything(0, verbose=False)
    assert FACES_RNG == _draws()


def test_interrupted_run_resumes_to_the_same_numbers(demo_run, tmp_path, tiny_root):
    metrics, _ = demo_run
    _run(tmp_path, tiny_root, "demo", "trainer.max_epochs=1", "data.batch_size=8")
    resumed, _ = _run(tmp_path, tiny_root, "demo", "trainer.max_epochs=3", "data.batch_size=8")
    logs = read_logs(tmp_path)
    assert sorted(logs.dropna(subset=["train/loss_epoch"])["epoch"].astype(int)) == [0, 1, 2]  # nothing lost
    assert resumed["val"] == metrics["val"] and resumed["test"] == metrics["test"]


def test_resume_with_another_config_is_refused(demo_run, tiny_root):
    _, out = demo_run
    with pytest.raises(ConfigError, match="different config"):
        _run(out, tiny_root, "demo", "trainer.max_epochs=3", "data.batch_size=4")


# widths of the streams the synthetic preset lacks (configs/offline.yaml, configs/muse2022.yaml)
OTHER_WIDTHS = {"expression": 7, "faus": 20, "vggface2": 512, "deepspectrum": 1024, "egemaps": 88}


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_trains(config, tmp_path, tiny_root):
    """fast_dev_run-like: 2 training batches of 4, one validation, test scored. A config reading streams
    the synthetic preset lacks trains on random features of exactly its streams."""
    quick = ["trainer.max_epochs=1", "data.batch_size=4", "trainer.limit_train_batches=2"]
    streams = streams_of(load_config(config))
    if set(streams) <= set(STREAMS):
        metrics, out = _run(tmp_path, tiny_root, config.stem, *quick)
    else:
        root = make_random_dataset(tmp_path / "data", dims={s: {**WIDTHS, **OTHER_WIDTHS}[s] for s in streams})
        out = tmp_path / "run"
        metrics = train(load_config(config, [f"data.root={root}", "data.layout=auto", f"out={out}",
                                             "trainer.progress_bar=false", *quick]))
    assert np.isfinite(metrics["val"]["mean_pcc"]) and (out / "predictions_test.csv").exists()


@pytest.mark.parametrize("logger", ["tensorboard", "mlflow"])
def test_loggers_users_already_read(tmp_path, tiny_root, logger):
    """trainer.logger: TensorBoard event files, or a local MLflow store (SQLite, no server), holding val mean PCC."""
    metrics, out = _run(tmp_path, tiny_root, "demo", "trainer.max_epochs=1", "data.batch_size=8",
                        "model.preset=tiny", f"trainer.logger={logger}",
                        f"trainer.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}")  # the shared store, here in tmp
    if logger == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(next(out.glob("logs/version_0")))).Reload()
        logged = [e.value for e in events.Scalars("val/mean_pcc")]
    else:
        import mlflow

        client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
        run = client.search_runs(client.get_experiment_by_name("eri").experiment_id)[0]
        logged = [m.value for m in client.get_metric_history(run.info.run_id, "val/mean_pcc")]
    assert logged and logged[-1] == pytest.approx(metrics["val"]["mean_pcc"], abs=1e-6)
