"""Config schema of ``tools/train_mma.py``: the same typed-OmegaConf rules as `eri.config` (unknown
keys are errors listing the valid ones), with `optim` and `trainer` groups shared with it.

    data.datasets: [{reader: affectnet|affwild2|emotionet, root, name?, weight?, tasks?, options?,
                     train_split?, val_split?}]
``tasks`` keeps only those labels of a dataset (e.g. ``[expr, va]``); ``options`` go to the reader
(e.g. ``{csv: my_train.csv}``); ``val_split: null`` skips validation on that dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from eri.config import ConfigError, OptimConfig, TrainerConfig, load_structured, rule

DATASET_KEYS = ("reader", "root", "name", "weight", "tasks", "options", "train_split", "val_split")
TASKS = ("va", "expr", "au")


@dataclass
class MMADataConfig:
    synthetic: Optional[str] = None  # an eri.mma.synthetic preset generated under `synthetic_root` on first use
    synthetic_root: str = "data/mma-small"
    synthetic_seed: int = 0
    datasets: list = field(default_factory=list)  # see module docstring; `${data.synthetic_root}` works in roots
    batch_size: int = rule(64, ge=1)
    eval_batch_size: Optional[int] = rule(None, ge=1)
    num_workers: int = rule(0, ge=0)
    align_size: int = rule(224, ge=16)  # alignment crop size, as extraction's face crops (then resized to model.crop_size)
    samples_per_epoch: Optional[int] = rule(None, ge=1)  # draws of the mixing sampler per epoch; None: sum of train sizes
    augment: dict = field(
        default_factory=lambda: {"flip": True, "scale_min": 0.85, "rotation": 10.0, "color_jitter": 0.2}
    )


@dataclass
class MMAConfig:
    seed: int = 0
    out: Optional[str] = None
    data: MMADataConfig = field(default_factory=MMADataConfig)
    model: dict = field(default_factory=lambda: {"backbone": {"name": "resnet18"}, "crop_size": 224})
    loss: dict = field(default_factory=lambda: {"va": 1.0, "expr": 1.0, "au": 1.0, "consistency": 1.0})
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(name="adam", lr=1e-3, weight_decay=0.0, lr_step_epochs=0)
    )
    # best checkpoint by sum(weight * metric), metrics named "<dataset>/<metric>" as logged under val/;
    # empty: the mean over val datasets and their tasks of VA mean CCC, expression macro-F1, AU macro-F1
    select: dict = field(default_factory=dict)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def load_mma_config(path=None, overrides=()) -> DictConfig:
    cfg = load_structured(MMAConfig, path, overrides)
    if cfg.out is None and path is not None:
        cfg.out = f"runs/{Path(path).stem}"
    if not cfg.data.datasets:
        raise ConfigError("data.datasets is empty: name at least one dataset (reader + root)")
    for i, d in enumerate(cfg.data.datasets):
        unknown = sorted(set(d) - set(DATASET_KEYS))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in data.datasets[{i}]; valid keys: {list(DATASET_KEYS)}")
        bad = sorted(set(d.get("tasks") or TASKS) - set(TASKS))
        if bad:
            raise ConfigError(f"data.datasets[{i}].tasks: unknown task(s) {bad}; valid: {list(TASKS)}")
    return cfg
