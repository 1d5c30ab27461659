"""The run skeleton every trainer shares (ERI models, `eri.training.run`; the MMA affect model,
`eri.mma.train`): CPU settings, the resume check, the run directory and its resolved config, the
best and last checkpoints, early stopping, RNG state in checkpoints, the logger, and the fit.

    <out>/config.yaml                the resolved config
    <out>/checkpoints/best-*.ckpt    best epoch by the monitored metric; last.ckpt for resuming
    <out>/logs/version_<k>/...       one folder per attempt (CSV or TensorBoard); MLflow: a run in the
                                     shared store (`eri.tracking`), one per attempt, named <out>

Running again with the same ``out`` resumes from ``last.ckpt`` (the config must be the same, except
``trainer.max_epochs``). Seeded and deterministic on CPU: `RNGState` keeps the torch, numpy and
Python generators in every checkpoint, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from eri.config import NOT_NUMERIC, load_structured, to_yaml
from eri.errors import ConfigError
from eri.io import atomic_write_text, load_torch
from eri.runs import CHECKPOINTS, CONFIG, LAST
from eri.tracking import RUNS, artifact_location, check_uri, experiment_id, flat_params, tracking_uri

# keys a resume may change: max_epochs, and every key that cannot change the numbers
RESUMABLE = ("trainer.max_epochs", *NOT_NUMERIC)


class RNGState(Callback):
    """Saves the RNG states in every checkpoint and restores them when a fit resumes, so a resumed
    run draws the same dropout masks as an uninterrupted one. Tensors and primitives only: the
    checkpoint stays ``weights_only``-loadable."""

    KEY = "rng_states"

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, state, py_gauss = random.getstate()
        checkpoint[self.KEY] = {
            **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, list(state), py_gauss],
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.KEY not in checkpoint or trainer.state.fn != "fit":
            return
        rng = checkpoint[self.KEY]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        kind, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, state, py_gauss = rng["python"]
        random.setstate((version, tuple(state), py_gauss))


def configure_cpu(cfg: DictConfig) -> None:
    """CPU settings of this process. Several CPU ranks on one machine split the cores between them
    (oversubscribed OpenMP threads spin against each other and can run 10-30x slower).
    ``trainer.flush_denormal``: gradients flowing back through time from a video's last step decay
    into denormal floats, on which x86 cores are very slow; flushing them to 0 made a 1 x 64 LSTM
    alone train 9x faster (149 vs 17 videos/s, T = 300, batch 32) and changes no value above 1e-38."""
    t = cfg.trainer
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_flush_denormal(bool(t.flush_denormal))
    if not on_gpu(t) and isinstance(t.devices, int) and t.devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // t.devices))


def on_gpu(t) -> bool:
    """Whether the run's ``trainer`` section puts it on a CUDA GPU (``auto`` finds one when torch sees one)."""
    return t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())


def return_freed_memory() -> None:
    """Hand the C heap's freed pages back to the OS after a run (glibc's ``malloc_trim``; nothing where the
    C library lacks it). A process that trains run after run (ablation tables, worlds, ensembles, a search
    worker) otherwise keeps every run's freed tensors as heap: one demo run left RSS at 3.1 GB, 0.9 GB after
    the trim, and an ablation process was OOM-killed at 13.5 GB after 16 runs without it."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl builds without it): the OS keeps what it has
        pass


@contextlib.contextmanager
def isolated_rng():
    """The global random states (Python, NumPy, torch CPU) are restored after the block, so preparing data
    (generating a synthetic dataset, extracting crops) in the run's own process draws nothing from the
    run's seeded stream: the first run, which makes the data, gives the numbers of every rerun."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def prepare_once(datamodule: L.LightningDataModule) -> None:
    """``prepare_data`` (synthetic data, packed copies) in the first process of a machine only: DDP ranks
    that Lightning starts later find it done. The run's random numbers are untouched (`isolated_rng`)."""
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        with isolated_rng():
            datamodule.prepare_data()


def check_resume(out: Path, cfg: DictConfig) -> Path | None:
    """``last.ckpt`` when ``out`` holds an unfinished or finished run of the same config, else None.
    The checkpoint is loaded once with ``weights_only=True`` first, so a damaged or code-carrying
    file is refused before Lightning reads it; another config is an error."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} is a file, not a run directory; give --out a new folder or a run to resume")
    last, saved = out / CHECKPOINTS / LAST, out / CONFIG
    if not last.exists():
        return None
    load_torch(last, "checkpoint to resume from")
    if saved.exists():
        old = load_structured(OmegaConf.get_type(cfg), saved)  # keys added to eri since then take their defaults
        for key in RESUMABLE:
            if OmegaConf.select(cfg, key, default=None) is not None or OmegaConf.select(old, key, default=None) is not None:
                OmegaConf.update(old, key, OmegaConf.select(cfg, key), merge=False)
        if to_yaml(old) != to_yaml(cfg):
            raise ConfigError(
                f"{out} holds a run with a different config ({saved}); resume needs the same config "
                "(only trainer.max_epochs may change). Use another --out for a new run."
            )
    return last


class LogLR(Callback):
    """``lr`` once per epoch (the first optimizer's first group, as this epoch uses it): one name
    whatever the optimizer, so runs compare in every logger."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            pl_module.log("lr", lr, on_step=False, on_epoch=True, batch_size=1, sync_dist=False)


def make_logger(cfg: DictConfig, out: Path):
    """``trainer.logger``: csv (``logs/version_<k>/metrics.csv``, one per attempt), tensorboard (event
    files in the same folders) or mlflow (a run named ``out`` in experiment ``eri`` of the shared store,
    `eri.tracking.tracking_uri`: SQLite under runs/ unless set otherwise; no server needed)."""
    kind = cfg.trainer.logger
    try:
        if kind == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            return TensorBoardLogger(out, name="logs", default_hp_metric=False)
        if kind == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger
            from lightning.pytorch.utilities import rank_zero_only

            uri = tracking_uri(cfg.trainer.get("tracking_uri"))
            if rank_zero_only.rank == 0:  # the only rank that logs; creating it here is safe against parallel runs
                experiment_id(uri, RUNS)
            return MLFlowLogger(experiment_name=RUNS, run_name=str(out), tracking_uri=uri,
                                artifact_location=artifact_location(uri), tags={"eri.out": str(Path(out).resolve())})
    except ModuleNotFoundError as e:
        raise ConfigError(f"trainer.logger={kind} needs {e.name}: pip install -e '.[loggers]'") from None
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(out, name="logs")


def log_config(trainer: L.Trainer, cfg: DictConfig, metrics: list[str]) -> None:
    """The resolved config as flat hyperparameters (`eri.tracking.flat_params`) in the trainer's logger:
    CSV ``hparams.yaml``, MLflow params, and TensorBoard's HParams summary with ``metrics`` as its
    columns (their values are the scalars logged during the run, so the HParams tab compares runs)."""
    logger = trainer.logger
    if logger is None:
        return
    params = flat_params(cfg)
    logger.log_hyperparams(params)
    from lightning.pytorch.loggers import TensorBoardLogger

    if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
        from torch.utils.tensorboard.summary import hparams

        plain = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
        writer = logger.experiment._get_file_writer()
        for summary in hparams(plain, dict.fromkeys(metrics, 0.0)):
            writer.add_summary(summary)


def upload_files(trainer: L.Trainer, *paths: Path) -> None:
    """MLflow: the run's files (``config.yaml``, ``metrics.json``) as artifacts of its MLflow run,
    called once they are written; other loggers keep them in the run directory already."""
    from lightning.pytorch.loggers import MLFlowLogger

    logger = trainer.logger
    if isinstance(logger, MLFlowLogger) and trainer.is_global_zero:
        for path in paths:
            if Path(path).is_file():
                logger.experiment.log_artifact(logger.run_id, str(path))


def trainer_determinism(t) -> bool | str:
    """Lightning's ``deterministic`` for ``trainer.deterministic``: True on the CPU (the promise: same config
    and seed, same numbers); "warn" where the run may reach a GPU, since torch has no deterministic CUDA
    backward for some ops, AdaptiveAvgPool2d's among them (the MMA CNN), and True makes them raise a
    RuntimeError: deterministic kernels wherever torch has them, a warning elsewhere."""
    if not t.deterministic:
        return False
    return "warn" if on_gpu(t) else True


def build_trainer(cfg: DictConfig, out: Path, callbacks=(), **overrides) -> L.Trainer:
    from eri.training.noise import quiet_lightning

    quiet_lightning()  # no "GPU available", no advertising; real warnings still show
    t = cfg.trainer
    kwargs = dict(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=trainer_determinism(t),
        enable_progress_bar=t.progress_bar,
        num_sanity_val_steps=0,  # a partial validation would score a partial split
        logger=overrides.pop("logger") if "logger" in overrides else make_logger(cfg, out),  # evaluate: none
        callbacks=list(callbacks) + ([TQDMProgressBar(refresh_rate=10)] if t.progress_bar else []),
        enable_model_summary=False,
    )
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def fit(cfg: DictConfig, out: Path, task: L.LightningModule, datamodule: L.LightningDataModule, monitor: str | None,
        resume: Path | None, callbacks=()) -> tuple[L.Trainer, str]:
    """Write ``out/config.yaml``, fit (resuming from ``resume``), and return the trainer and the best
    checkpoint by ``monitor`` (max; ``last.ckpt`` when nothing is monitored). ``callbacks``: extra
    Lightning callbacks (e.g. a search's pruning callback)."""
    check_uri(cfg.trainer.get("tracking_uri"))  # before config.yaml keeps it
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG, to_yaml(cfg))
    ckpt = ModelCheckpoint(
        dirpath=out / CHECKPOINTS,
        filename="best-{epoch:03d}",
        monitor=monitor,
        mode="max",
        save_top_k=1 if monitor else 0,
        save_last=True,
    )
    cbs = [ckpt, RNGState(), LogLR(), *callbacks]
    if cfg.trainer.early_stopping_patience and monitor:
        cbs.append(EarlyStopping(monitor, mode="max", patience=cfg.trainer.early_stopping_patience))
    trainer = build_trainer(cfg, out, cbs)
    hp = monitor or "val/mean_pcc"
    log_config(trainer, cfg, [hp, *(["test/mean_pcc"] if hp == "val/mean_pcc" else [])])
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    return trainer, ckpt.best_model_path or str(out / CHECKPOINTS / LAST)


def read_logs(out: str | Path) -> pd.DataFrame:
    """All CSV-logged rows of a run, every attempt (a resumed run logs into a new version folder)."""
    files = sorted(Path(out, "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()
