"""Experiment tracking: one MLflow store for every run, ensemble, search and ablation, and the flat
config every logger (CSV, TensorBoard, MLflow) records as hyperparameters.

The store is ``trainer.tracking_uri`` when a config sets it, else the environment's
``MLFLOW_TRACKING_URI``, else ``sqlite:///runs/mlflow.db`` (relative to the working directory, beside
the runs): so runs, and the tools' ``--mlflow`` summaries, land in one store that one ``mlflow ui``
shows side by side. A SQLite store keeps its artifacts beside its file (``<dir>/mlartifacts``), so the
two move together. A URI holding a password is refused in a config, which every run saves in its
``config.yaml``: set it in ``MLFLOW_TRACKING_URI`` instead. Experiments group the kinds of results:
``eri`` (training runs, ERI and MMA), ``eri-ensemble``, ``eri-search``, ``eri-ablate``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from eri.errors import ConfigError
from eri.io import mask_secrets

ENV = "MLFLOW_TRACKING_URI"
DEFAULT_URI = "sqlite:///runs/mlflow.db"
RUNS, ENSEMBLES, SEARCHES, ABLATIONS = "eri", "eri-ensemble", "eri-search", "eri-ablate"
_BAD_KEY = re.compile(r"[^\w\-. :/]")  # MLflow keys: alphanumerics, _ - . space : /


def tracking_uri(configured: str | None = None) -> str:
    """The store: the configured URI, else ``$MLFLOW_TRACKING_URI``, else the shared local default."""
    return configured or os.environ.get(ENV) or DEFAULT_URI


def check_uri(configured: str | None, where: str = "trainer.tracking_uri") -> None:
    """A password in a config would be saved with the run: refuse it, naming where it belongs."""
    if configured and mask_secrets(configured) != configured:
        raise ConfigError(f"{where} = {mask_secrets(configured)} holds a password, which the run's config.yaml "
                          f"would keep: leave {where} unset and put the URI in the {ENV} environment variable")


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") and ":memory:" not in uri else None


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of this store keeps its files: beside a SQLite file, else the server's choice."""
    db = _sqlite_file(uri)
    return (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None


def experiment_id(uri: str, name: str) -> str:
    """The experiment ``name`` in store ``uri``, created (with its artifact location) when missing; a
    SQLite store's folder is created too. Safe when several processes create it at once."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    db = _sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri))
    except MlflowException:  # another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def flat_params(tree, prefix: str = "") -> dict:
    """``{"optim.lr": 1e-4, "model.branches.0.encoder.name": "gru", ...}``: every leaf of a config under
    its dotted key (list items by index; a list of plain values stays one value, as JSON), so runs
    compare key by key. Strings are masked (`eri.io.mask_secrets`): a URL's password never becomes a param."""
    from omegaconf import Container, OmegaConf

    if isinstance(tree, Container):
        tree = OmegaConf.to_container(tree, resolve=True)
    out: dict = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, Container):
            v = OmegaConf.to_container(v, resolve=True)
        if isinstance(v, dict) or (isinstance(v, (list, tuple)) and any(isinstance(x, (dict, list, tuple)) for x in v)):
            out.update(flat_params(v, f"{key}.") if len(v) else {key: "[]" if isinstance(v, list) else "{}"})
        elif isinstance(v, (list, tuple)):
            out[key] = mask_secrets(json.dumps(list(v)))
        else:
            out[key] = mask_secrets(v) if isinstance(v, str) else v
    return out


def flat_metrics(tree, prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics dict under ``/``-joined keys (``val/mean_pcc``, ``val/pcc/Fear``: the
    names training logs), lists and text left out; keys made valid for MLflow."""
    out: dict[str, float] = {}
    for k, v in tree.items():
        key = _BAD_KEY.sub("_", f"{prefix}{k}")
        if isinstance(v, dict):
            out.update(flat_metrics(v, f"{key}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def require(what: str = "--mlflow") -> None:
    """Fail before any work when MLflow is missing (a summary is logged only at the end)."""
    try:
        import mlflow  # noqa: F401
    except ModuleNotFoundError as e:
        raise ConfigError(f"{what} needs {e.name}: pip install -e '.[loggers]'") from None


def log_summary(experiment: str, run_name: str, params: dict, metrics: dict, files=(), tags: dict | None = None) -> str:
    """One finished MLflow run in the shared store (`tracking_uri`): ``params`` (flattened, masked),
    ``metrics`` (flattened numbers) and the existing ``files`` as artifacts. Returns the run id.
    What the tools' ``--mlflow`` calls with their summary."""
    require()
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    uri = tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(experiment_id(uri, experiment), run_name=run_name)
    rid, now = run.info.run_id, int(time.time() * 1000)
    p = [Param(k, str(v)[:6000]) for k, v in flat_params(params).items()]
    m = [Metric(k, v, now, 0) for k, v in flat_metrics(metrics).items()]
    t = [RunTag(k, mask_secrets(v)) for k, v in (tags or {}).items()]
    for i in range(0, max(len(p), len(m), 1), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(rid, metrics=m[i:i + 100], params=p[i:i + 100], tags=t if i == 0 else [])
    for f in files:
        if Path(f).is_file():
            client.log_artifact(rid, str(f))
    client.set_terminated(rid)
    return rid


def describe(experiment: str, run_id: str) -> str:
    return f"MLflow: run {run_id} in experiment '{experiment}' of {mask_secrets(tracking_uri())}"
