"""One MMA training run, from a resolved config to a run directory (same shape as `eri.training.run`):

<out>/config.yaml                   resolved config; rerunning it with the same --out resumes
<out>/checkpoints/best-*.ckpt        best epoch by val/score; last.ckpt for resuming. Either is
                                     what the `mma` and `holistic` extractors load (`load_mma`)
<out>/logs/version_<k>/metrics.csv   Lightning CSV logs, one folder per attempt
<out>/metrics.json                  {"val": {dataset: {metric: value}}, "score": s, "checkpoint": path}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tabulate import tabulate
from torch.utils.data import ConcatDataset, DataLoader

from eri.errors import ConfigError
from eri.io import atomic_write_text
from eri.mma.config import TASKS
from eri.mma.data import READERS, FaceDataset, MixSampler, Records, build_augment
from eri.mma.task import MMATask
from eri.training.skeleton import check_resume, configure_cpu, fit, prepare_once, upload_files


def _restrict(rec: Records, tasks) -> Records:
    """Drop the labels of tasks a dataset entry does not keep (e.g. AffectNet for expression only)."""
    tasks = set(tasks or TASKS)
    if "va" not in tasks:
        rec.va_mask = np.zeros_like(rec.va_mask)
    if "expr" not in tasks:
        rec.expr = np.full_like(rec.expr, -1)
    if "au" not in tasks:
        rec.au_mask = np.zeros_like(rec.au_mask)
    return rec


class MMADataModule(L.LightningDataModule):
    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.cfg = cfg
        self.crop = int(cfg.model.crop_size)
        self.train_sets: list[FaceDataset] = []
        self.val_sets: dict[str, FaceDataset] = {}
        self.weights: list[float] = []

    def prepare_data(self) -> None:
        """Generate the synthetic face data on first use (Lightning calls this once per machine)."""
        d = self.cfg.data
        if d.synthetic:
            from eri.mma.synthetic import ensure_mma_synthetic

            ensure_mma_synthetic(d.synthetic_root, d.synthetic, seed=d.synthetic_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_sets or self.val_sets:
            return
        d = self.cfg.data
        for i, spec in enumerate(d.datasets):
            spec = OmegaConf.to_container(spec, resolve=True)
            try:
                read = READERS.resolve(spec.get("reader"))
            except ConfigError as e:
                raise ConfigError(f"data.datasets[{i}]: {e}") from None
            name = spec.get("name") or spec["reader"]
            opts = spec.get("options") or {}
            if spec.get("train_split", "train"):
                rec = _restrict(read(spec["root"], spec.get("train_split", "train"), **opts), spec.get("tasks"))
                aug = build_augment(self.crop, **d.augment)
                self.train_sets.append(FaceDataset(rec, self.crop, d.align_size, aug))
                self.weights.append(float(spec.get("weight", 1.0)))
            if spec.get("val_split", "val"):
                rec = _restrict(read(spec["root"], spec.get("val_split", "val"), **opts), spec.get("tasks"))
                if rec.tasks():
                    self.val_sets[name] = FaceDataset(rec, self.crop, d.align_size)

    def val_info(self) -> dict:
        return {
            n: {"tasks": sorted(ds.rec.tasks()), "au_labelled": ds.rec.au_mask.any(0).tolist()}
            for n, ds in self.val_sets.items()
        }

    def train_dataloader(self):
        sizes = [len(s) for s in self.train_sets]
        n = self.cfg.data.samples_per_epoch or sum(sizes)
        sampler = MixSampler(sizes, self.weights, n, seed=self.cfg.seed)
        return DataLoader(
            ConcatDataset(self.train_sets),
            batch_size=self.cfg.data.batch_size,
            sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            drop_last=True,
            persistent_workers=False,
        )

    def val_dataloader(self):
        bs = self.cfg.data.eval_batch_size or self.cfg.data.batch_size
        return [
            DataLoader(ds, batch_size=bs, shuffle=False, num_workers=self.cfg.data.num_workers)
            for ds in self.val_sets.values()
        ]


def build_task(cfg: DictConfig, dm: MMADataModule) -> MMATask:
    return MMATask(
        OmegaConf.to_container(cfg.model, resolve=True),
        OmegaConf.to_container(cfg.loss),
        OmegaConf.to_container(cfg.optim),
        dm.val_info(),
        OmegaConf.to_container(cfg.select),
    )


def train_mma(cfg: DictConfig) -> dict:
    """Train, keep the best epoch by val/score, score val with it, write the run directory."""
    out = Path(cfg.out or "runs/mma")
    configure_cpu(cfg)
    resume = check_resume(out, cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = MMADataModule(cfg)
    prepare_once(dm)
    dm.setup("fit")
    task = build_task(cfg, dm)
    has_val = bool(dm.val_sets)
    trainer, best = fit(cfg, out, task, dm, "val/score" if has_val else None, resume)
    metrics: dict = {"checkpoint": os.path.relpath(best, out)}
    if has_val:
        trainer.validate(task, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True)
        metrics["val"] = {k: v for k, v in task.results.items() if k != "score"}
        metrics["score"] = task.results.get("score")
    if trainer.is_global_zero:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
        upload_files(trainer, out / "config.yaml", out / "metrics.json")  # MLflow artifacts
        if has_val:
            print(
                f"\n{out}: best checkpoint {metrics['checkpoint']} (val/score {metrics['score']:.4f})\n"
                + format_table(metrics["val"])
            )
    return metrics


def format_table(val: dict) -> str:
    cols = ["va_ccc_valence", "va_ccc_arousal", "expr_f1", "expr_acc", "au_f1"]
    rows = [[name] + [f"{r[c]:.4f}" if c in r else "" for c in cols] for name, r in val.items()]
    return tabulate(rows, headers=["val set", "CCC V", "CCC A", "expr F1", "expr acc", "AU F1"], tablefmt="github")
