"""One training run, from a resolved config to a run directory.

    <out>/config.yaml            the resolved config (rerun with `tools/train.py --config <out>/config.yaml`)
    <out>/checkpoints/best-*.ckpt the best epoch by val mean PCC; last.ckpt for resuming
    <out>/logs/version_<k>/metrics.csv  per-step and per-epoch logs, one folder per attempt (`read_logs`)
    <out>/metrics.json           {"val": {...}, "test": {...}, "ceiling": {...}} scored with the best checkpoint
    <out>/predictions_<split>.csv File_ID + 7 intensities

Running again with the same ``--out`` resumes from ``last.ckpt`` (the config must be the same, but
``trainer.max_epochs`` may grow). Seeded and deterministic on CPU.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from eri.config import streams_of, to_yaml
from eri.constants import EMOTIONS
from eri.data.dataset import ERIDataModule
from eri.errors import CheckpointError, ConfigError, InputError
from eri.io import atomic_write_text, inside, load_torch
from eri.models import create_model
from eri.training.metrics import format_table
from eri.training.task import ERITask


def prepare_data_root(cfg: DictConfig) -> Path:
    """The dataset root, generating the synthetic preset first when the config names one."""
    root = Path(cfg.data.root)
    if cfg.data.synthetic:
        from eri.data.synthetic import ensure_synthetic

        ensure_synthetic(root, cfg.data.synthetic, seed=cfg.data.synthetic_seed)
    elif not root.is_dir():
        raise ConfigError(f"data.root: dataset root {root} does not exist (set data.root, or data.synthetic=<preset>)")
    return root


def build_datamodule(cfg: DictConfig, progress: bool = True) -> ERIDataModule:
    d = cfg.data
    return ERIDataModule(
        root=d.root,
        streams=streams_of(cfg),
        layout=d.layout,
        batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size,
        num_workers=d.num_workers,
        drop_invalid_frames=d.drop_invalid_frames,
        min_valid_frames=d.min_valid_frames,
        frame_stride=d.frame_stride,
        seed=cfg.seed,
        progress=progress,
        bad_files=d.bad_files,
    )


def build_task(cfg: DictConfig, dm: ERIDataModule) -> ERITask:
    model = create_model(
        OmegaConf.to_container(cfg.model.branches, resolve=True),
        OmegaConf.to_container(cfg.model.fusion, resolve=True),
        dm.stream_dims,
        dm.stream_stats() if cfg.data.standardize else None,
    )
    return ERITask(model, OmegaConf.to_container(cfg.loss), OmegaConf.to_container(cfg.optim))


def build_trainer(cfg: DictConfig, out: Path, callbacks=(), **overrides) -> L.Trainer:
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
        deterministic=t.deterministic,
        enable_progress_bar=t.progress_bar,
        num_sanity_val_steps=0,  # a partial validation would score a partial split
        logger=CSVLogger(out, name="logs"),  # logs/version_<k>/metrics.csv, one per (resumed) attempt
        callbacks=list(callbacks) + ([TQDMProgressBar(refresh_rate=10)] if t.progress_bar else []),
        enable_model_summary=False,
    )
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def configure_cpu(cfg: DictConfig) -> None:
    """CPU settings of this process. Several CPU ranks on one machine split the cores between them
    (oversubscribed OpenMP threads spin against each other and can run 10-30x slower).
    ``trainer.flush_denormal``: gradients flowing back through time from a video's last step decay
    into denormal floats, on which x86 cores are very slow; flushing them to 0 made a 1 x 64 LSTM
    alone train 9x faster (149 vs 17 videos/s, T = 300, batch 32) and changes no value above 1e-38."""
    t = cfg.trainer
    torch.set_flush_denormal(bool(t.flush_denormal))
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and isinstance(t.devices, int) and t.devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // t.devices))


def _check_resume(out: Path, cfg: DictConfig) -> Path | None:
    last = out / "checkpoints" / "last.ckpt"
    saved = out / "config.yaml"
    if not last.exists():
        return None
    load_torch(last, "checkpoint to resume from")  # refuses a damaged or code-carrying file before Lightning reads it
    if saved.exists():
        old = OmegaConf.load(saved)
        old.trainer.max_epochs = cfg.trainer.max_epochs  # the one key a resume may change
        if to_yaml(old) != to_yaml(cfg):
            raise ConfigError(
                f"{out} holds a run with a different config ({saved}); resume needs the same config "
                "(only trainer.max_epochs may change). Use another --out for a new run."
            )
    return last


def read_logs(out: str | Path) -> pd.DataFrame:
    """All logged rows of a run, every attempt (a resumed run logs into a new version folder)."""
    files = sorted(Path(out, "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def write_predictions(out: Path, split: str, ids: list[str], pred) -> None:
    df = pd.DataFrame(pred, columns=list(EMOTIONS))
    df.insert(0, "File_ID", ids)
    atomic_write_text(out / f"predictions_{split}.csv", df.to_csv(index=False, float_format="%.6f"))


def _copy_stream_meta(root: Path, out: Path) -> None:
    """Keep each stream's ``meta.json`` (extractor configs and hashes) with the run, so
    ``tools/predict.py`` extracts new videos exactly like the training data without the store."""
    for meta in sorted((Path(root) / "features").glob("*/meta.json")):
        atomic_write_text(out / "streams" / f"{meta.parent.name}.json", meta.read_text())


def train(cfg: DictConfig, callbacks=()) -> dict:
    """Train, pick the best epoch by val mean PCC, score val and test with it, write the run dir.
    ``callbacks``: extra Lightning callbacks for the fit (e.g. a search's pruning callback)."""
    out = Path(cfg.out or "runs/run")
    if cfg.trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    configure_cpu(cfg)
    root = prepare_data_root(cfg)
    resume = _check_resume(out, cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg, progress=cfg.trainer.progress_bar)
    dm.setup("fit")  # every label, feature file and split check happens here, before anything is written
    task = build_task(cfg, dm)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", to_yaml(cfg))
    _copy_stream_meta(root, out)

    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best-{epoch:03d}",
        monitor="val/mean_pcc",
        mode="max",
        save_top_k=1,
        save_last=True,
    )
    fit_callbacks = [ckpt, *callbacks]
    if cfg.trainer.early_stopping_patience:
        fit_callbacks.append(EarlyStopping("val/mean_pcc", mode="max", patience=cfg.trainer.early_stopping_patience))
    trainer = build_trainer(cfg, out, fit_callbacks)
    trainer.fit(task, datamodule=dm, ckpt_path=str(resume) if resume else None, weights_only=True)

    best = ckpt.best_model_path or str(out / "checkpoints" / "last.ckpt")
    trainer.validate(task, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True)
    if len(dm.splits["test"].ids):
        trainer.test(task, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True)
    return finalize(out, root, dm, task, trainer, best)


def finalize(out: Path, root: Path, dm: ERIDataModule, task: ERITask, trainer: L.Trainer, best: str) -> dict:
    """Write predictions and metrics.json (rank 0 only) and print the per-emotion table."""
    metrics: dict = {}
    for split in ("val", "test"):
        res = task.results.get(split)
        if res is not None and res["score"] is not None:
            metrics[split] = res["score"]
            continue
        why = dm.splits[split].not_scored() or "not evaluated"
        metrics[split] = {"not_scored": why}
        if split == "test" and np.isnan(dm.splits[split].labels).all() and len(dm.splits[split].ids):
            continue  # a test split without any label (ABAW5 withholds them) is normal: predictions are written
        warnings.warn(f"{out}: {split} not scored: {why}")
    if dm.skipped:
        metrics["skipped"] = dm.skipped
        atomic_write_text(out / "skipped_videos.csv", pd.DataFrame(dm.skipped).to_csv(index=False))
    synthetic = root / "synthetic.json"
    if synthetic.exists():
        metrics["ceiling"] = {k: v for k, v in json.loads(synthetic.read_text())["ceiling"].items() if k in ("val", "test")}
    metrics["checkpoint"] = os.path.relpath(best, out)
    if trainer.is_global_zero:
        for split, res in task.results.items():
            write_predictions(out, split, dm.splits[split].ids, res["pred"])
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
        scored = {s: metrics[s] for s in ("val", "test") if "mean_pcc" in metrics[s]}
        if scored:
            print(f"\n{out}: best checkpoint {metrics['checkpoint']}\n" + format_table(scored, metrics.get("ceiling")))
    return metrics


def evaluate(run_dir: str | Path, splits=("val", "test"), overrides: dict | None = None) -> dict:
    """Score a finished run's best checkpoint again (e.g. with other trainer.devices), no training."""
    from eri.config import load_config

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml", [f"{k}={v}" for k, v in (overrides or {}).items()])
    best = best_checkpoint(run_dir)
    configure_cpu(cfg)
    prepare_data_root(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg, progress=False)
    dm.setup("test")
    task = build_task(cfg, dm)
    load_weights(task, best)
    trainer = build_trainer(cfg, run_dir / "eval", logger=False)
    for split in splits:
        if split == "val":
            trainer.validate(task, datamodule=dm, verbose=False)
        elif len(dm.splits["test"].ids):
            trainer.test(task, datamodule=dm, verbose=False)
    return {s: r["score"] for s, r in task.results.items() if r["score"] is not None}


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a finished run's ``metrics.json`` names, which must lie inside the run directory."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise InputError(f"{run_dir}: no finished run (metrics.json naming the best checkpoint) found")
    try:
        name = json.loads(metrics_path.read_text())["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{metrics_path} is damaged ({type(e).__name__}: {e})") from None
    best = inside(run_dir, str(name))
    if not best.is_file():
        raise InputError(f"{metrics_path} names the checkpoint {best}, which does not exist")
    return best


def load_weights(task: L.LightningModule, ckpt: Path) -> None:
    """A Lightning checkpoint's ``state_dict`` into ``task``, loaded with ``weights_only=True``."""
    state = load_torch(ckpt, "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint {ckpt} holds no state_dict")
    try:
        task.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt} does not fit this run's model ({str(e)[:300]})") from None
