"""Run configuration: a typed OmegaConf schema, YAML files, and ``key=value`` overrides.

Every key is checked: a typo is an error that names the key and lists the valid ones, whether it
comes from a YAML file or the command line. Model components (``model.branches[*].encoder``,
``model.fusion``) are checked against their constructors when the model is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError


@dataclass
class DataConfig:
    root: str = "data/hume-small"  # dataset root: ABAW5 (data_info.csv) or MuSe 2022 layout + features
    layout: str = "auto"  # auto | abaw5 | muse2022
    synthetic: Optional[str] = None  # a synthetic preset: generate `root` on first use when missing
    synthetic_seed: int = 0
    batch_size: int = 32
    eval_batch_size: Optional[int] = None
    num_workers: int = 0
    drop_invalid_frames: bool = True  # drop frames without a face (paper 004)
    min_valid_frames: int = 50  # fewer valid frames: not trained on, predicted with the train-label mean
    frame_stride: int = 1  # keep every k-th frame of per-frame streams (1 = all frames)
    standardize: bool = True  # z-score each feature column with training-set statistics (kept in the model)


@dataclass
class ModelConfig:
    branches: list = field(default_factory=list)  # [{name, streams: [..], encoder: {name, ...}}]
    fusion: dict = field(default_factory=lambda: {"name": "concat"})


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-4
    weight_decay: float = 0.5
    lr_step_epochs: int = 10  # StepLR: multiply the lr by lr_gamma every this many epochs (0: constant)
    lr_gamma: float = 0.5


@dataclass
class TrainerConfig:
    max_epochs: int = 30
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"  # e.g. ddp (Lightning's own DDP; gloo on CPU, nccl on GPU)
    precision: str = "32-true"
    gradient_clip_val: Optional[float] = None
    early_stopping_patience: Optional[int] = None  # epochs without val improvement; None: off
    limit_train_batches: Optional[float] = None  # fraction or count, for quick checks
    log_every_n_steps: int = 10
    deterministic: bool = True
    flush_denormal: bool = True  # CPU: treat denormal floats as 0 (RNN gradients decay into them, 10x slower)
    progress_bar: bool = True


@dataclass
class Config:
    seed: int = 0
    out: Optional[str] = None  # run directory; default runs/<config file name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: dict = field(default_factory=dict)  # weights of l2 / pcc / ccc; empty means {"l2": 1.0}
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def _valid_keys(key_path: str, schema: Any = None) -> list[str]:
    """The valid keys at the level of ``key_path`` (e.g. ``data.bach_size`` -> DataConfig's fields)."""
    node: Any = Config if schema is None else schema
    for part in key_path.split(".")[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            return []
        node = fields[part].default_factory
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


class ConfigError(ValueError):
    pass


def guard(fn, what: str, schema: Any = None):
    """Run an OmegaConf merge/update; turn its errors into a ConfigError naming the source and the valid keys."""
    try:
        return fn()
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = getattr(e, "full_key", None) or str(e)
        valid = _valid_keys(key, schema)
        raise ConfigError(f"{what}: unknown config key '{key}'" + (f"; valid keys here: {valid}" if valid else "")) from None
    except ValidationError as e:
        raise ConfigError(f"{what}: {e.msg} (key '{e.full_key}')") from None


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value (e.g. trainer.max_epochs=5)")
    key, value = item.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else None


def load_structured(schema: Any, path: str | Path | None = None, overrides: list[str] = ()) -> DictConfig:
    """``schema`` (a dataclass) <- YAML file <- ``key=value`` overrides, every unknown key an error that lists
    the valid ones. Shared by training, MMA and extraction configs. A dict or list override value replaces
    the old one (``loss={pcc: 1.0}`` drops l2); a scalar sets one key; list items by index (``a.0.b=1``)."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} not found")
        data = yaml.safe_load(path.read_text()) or {}
        cfg = guard(lambda: OmegaConf.merge(cfg, data), str(path), schema)
    for item in overrides:
        key, value = parse_override(item)
        guard(lambda: OmegaConf.update(cfg, key, value, merge=False), f"override '{item}'", schema)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> DictConfig:
    """The training config (``Config``); see ``load_structured``."""
    cfg = load_structured(Config, path, overrides)
    if cfg.out is None and path is not None:
        cfg.out = f"runs/{Path(path).stem}"
    if not cfg.loss:
        cfg.loss = {"l2": 1.0}
    if not cfg.model.branches:
        raise ConfigError("model.branches is empty: a config must define at least one branch")
    return cfg


def streams_of(cfg: DictConfig) -> list[str]:
    return list(dict.fromkeys(s for b in cfg.model.branches for s in b["streams"]))


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
