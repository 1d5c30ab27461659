"""Run configuration: a typed OmegaConf schema, YAML files, and ``key=value`` overrides.

Every key is checked: a typo is an error that names the key and lists the valid ones, whether it
comes from a YAML file or the command line. Every value with a range or a fixed set of choices
declares it once, in the schema (``rule(default, ge=1)``, ``rule("auto", choices=...)``), and is
checked after the overrides. Model components (``model.branches[*].encoder``, ``model.fusion``)
are checked against their constructors when the model is built. Every problem is a `ConfigError`.

**Composition, one way for every kind of config file** (training, MMA, extraction, search, ensemble):

- ``base: FILE`` or ``base: [FILE, ...]``: the file builds on those files. Bases load first
  (recursively, left to right), then the file's own keys merge on top: mappings key by key, a list or
  a scalar replaces. A file reached twice (two bases sharing one) applies once, at its first place.
  A relative base is looked up beside the including file, then (no file there) from the working
  directory, so ``configs/demo.yaml`` written from the repository root keeps working. A cycle, a
  missing base or a base of another kind (its top-level keys are not this schema's) is a one-line
  `ConfigError` naming the file.
- A top-level key with a dot is a path and sets that one value, replacing what was there (a mapping
  or a list too), exactly as ``key=value`` does on the command line; list items by index
  (``model.branches.1.encoder.norm: pre``). A file applies its plain keys first, then its paths.
- In code, ``overlay={path: value}`` is applied the same way after the files (an ablation row,
  `eri.search.ablate`), then the ``key=value`` overrides, then ``updates``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from eri.errors import ConfigError


def rule(default, **check):
    """A schema field with its allowed values: ``ge``/``gt``/``le``/``lt`` bounds, or ``choices``.
    ``None`` always passes (it means "not set" for Optional fields)."""
    return field(default=default, metadata=check)


@dataclass
class CVConfig:
    """Cross-validation folds over a pool of splits (`eri.data.folds`); ``folds: null`` means none."""

    folds: Optional[int] = rule(None, ge=2)
    fold: int = rule(0, ge=0)  # which fold this run holds out (its "val" split: out-of-fold predictions)
    pool: list = field(default_factory=lambda: ["train", "val"])  # never test
    group_by: Optional[str] = None  # a column of the label file or videos.csv (e.g. subject); null: by video
    seed: int = 0  # the folds' own seed (the same for every member of an ensemble)
    select: str = rule("last", choices=("last", "best"))  # last epoch (honest), or best on the held-out fold


@dataclass
class DataConfig:
    root: str = "data/hume-reaction"  # dataset root: ABAW5 (data_info.csv) or MuSe 2022 layout + features
    layout: str = rule("auto", choices=("auto", "abaw5", "muse2022"))
    synthetic: Optional[str] = None  # a synthetic preset: generate `root` on first use when missing
    synthetic_seed: int = 0
    batch_size: int = rule(32, ge=1)
    eval_batch_size: Optional[int] = rule(None, ge=1)
    num_workers: int = rule(0, ge=0)
    drop_invalid_frames: bool = True  # drop frames without a face (paper 004)
    min_valid_frames: int = rule(50, ge=0)  # fewer valid frames: not trained on, predicted with the train-label mean
    frame_stride: int = rule(1, ge=1)  # keep every k-th frame of per-frame streams (1 = all frames)
    standardize: bool = True  # z-score each feature column with training-set statistics (kept in the model)
    # a feature file that is damaged or has the wrong shape: `error` stops before training, naming it;
    # `skip` leaves that video out of training (predicted with the train-label mean) and reports it
    bad_files: str = rule("error", choices=("error", "skip"))
    cv: CVConfig = field(default_factory=CVConfig)
    # memory: load every video's input once; memmap: read it per step from the store's packed copy
    # (eri/data/packed.py): flat memory per rank at any dataset size, page cache shared between ranks
    cache: str = rule("memory", choices=("memory", "memmap"))
    bucket: bool = False  # length-bucketed batches (less padding; still seeded by epoch)


@dataclass
class ModelConfig:
    branches: list = field(default_factory=list)  # [{name, streams: [..], encoder: {name, preset?, ...}}]
    fusion: dict = field(default_factory=lambda: {"name": "concat"})
    # encoder size preset (paper | demo | tiny, `eri.models.presets`) for every branch whose encoder names
    # none; keys written in an encoder win over its preset
    preset: Optional[str] = rule(None, choices=("paper", "demo", "tiny"))


@dataclass
class OptimConfig:
    name: str = rule("adamw", choices=("adamw", "adam", "sgd"))
    lr: float = rule(1e-4, gt=0)
    weight_decay: float = rule(0.5, ge=0)
    lr_step_epochs: int = rule(10, ge=0)  # StepLR: multiply the lr by lr_gamma every this many epochs (0: constant)
    lr_gamma: float = rule(0.5, gt=0)


def devices_problem(value) -> str | None:
    """What Lightning would refuse in ``trainer.devices`` (with a traceback), or None: a count >= 1, -1
    (all), "auto", or device indices (a list, or a string like "0,1")."""
    if isinstance(value, str) and value.strip() in ("auto", "-1"):
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()] if "," in value else value
    try:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            n = int(value)
            return None if n >= 1 or n == -1 else "must be a count >= 1, -1 (all), auto, or a list of device indices"
        idx = [int(v) for v in value]
    except (TypeError, ValueError):
        return "must be a count >= 1, -1 (all), auto, or a list of device indices"
    if not idx or min(idx) < 0 or len(set(idx)) != len(idx):
        return "must list distinct device indices >= 0"
    return None


@dataclass
class TrainerConfig:
    max_epochs: int = rule(30, ge=1)
    accelerator: str = rule("auto", choices=("auto", "cpu", "gpu", "cuda", "mps"))
    devices: Any = rule(1, check=devices_problem)  # a count, -1 (all), auto, or device indices
    num_nodes: int = rule(1, ge=1)
    strategy: str = "auto"  # e.g. ddp (Lightning's own DDP; gloo on CPU, nccl on GPU)
    precision: str = rule("32-true", choices=("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true"))
    gradient_clip_val: Optional[float] = rule(None, gt=0)
    early_stopping_patience: Optional[int] = rule(None, ge=1)  # epochs without val improvement; None: off
    limit_train_batches: Optional[float] = rule(None, gt=0)  # fraction or count, for quick checks
    log_every_n_steps: int = rule(10, ge=1)
    # True: bit-identical on CPU. On a GPU torch lacks deterministic kernels for some ops this codebase uses
    # (AdaptiveAvgPool2d's backward), so there it means 'warn' (`skeleton.trainer_determinism`)
    deterministic: bool = True
    flush_denormal: bool = True  # CPU: treat denormal floats as 0 (RNN gradients decay into them, 10x slower)
    progress_bar: bool = True
    logger: str = rule("csv", choices=("csv", "tensorboard", "mlflow"))  # tensorboard/mlflow: pip install -e '.[loggers]'
    # mlflow: the store shared by every run, ensemble, search and ablation (`eri.tracking`); null: the
    # environment's MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db (relative to the working directory)
    tracking_uri: Optional[str] = None


@dataclass
class Config:
    seed: int = 0
    out: Optional[str] = None  # run directory; default runs/<config file name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: dict = field(default_factory=dict)  # weights of l2 / pcc / ccc; empty means {"l2": 1.0}
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# keys that cannot change a run's numbers: a resume may change them, the run cache ignores them
NOT_NUMERIC = ("out", "model.preset", "trainer.progress_bar", "trainer.logger", "trainer.tracking_uri", "data.num_workers",
               "data.cache")


def _valid_keys(key_path: str, schema: Any = None) -> list[str]:
    """The valid keys at the level of ``key_path`` (e.g. ``data.bach_size`` -> DataConfig's fields)."""
    node: Any = Config if schema is None else schema
    for part in key_path.split(".")[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            return []
        node = fields[part].default_factory
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


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
    except OmegaConfBaseException as e:  # e.g. a list where a mapping belongs
        raise ConfigError(f"{what}: {getattr(e, 'msg', e)} (key '{getattr(e, 'full_key', '?')}')") from None


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value (e.g. trainer.max_epochs=5)")
    key, value = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{key}=...': the value is not valid YAML ({_yaml_problem(e)})") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or type(e).__name__}{where}"


def read_yaml(path: str | Path) -> dict:
    """A YAML file that must hold a mapping; every problem is a `ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(e)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level, found a {type(data).__name__}")
    resolver = _RESOLVER.search(yaml.safe_dump(data))
    if resolver:  # ${oc.env:...} would copy a secret from the environment into the saved config
        raise ConfigError(f"{path}: resolvers like {resolver.group(0)}...}} are not allowed in config files; "
                          "plain ${key} references are")
    return data


_RESOLVER = re.compile(r"\$\{\s*[\w.]+\s*:")


def check_rules(cfg: Any, schema: Any, where: str, prefix: str = "") -> None:
    """Every ``rule(...)`` of ``schema`` (recursively) against ``cfg``; the first violation is a ConfigError."""
    for f in dataclasses.fields(schema):
        value = cfg.get(f.name)
        key = f"{prefix}{f.name}"
        nested = OmegaConf.get_type(value) if isinstance(value, DictConfig) else None
        if nested is not None and dataclasses.is_dataclass(nested):
            check_rules(value, nested, where, f"{key}.")
            continue
        if value is None or not f.metadata:
            continue
        m = f.metadata
        bad = (
            ("choices" in m and value not in m["choices"] and f"must be one of {list(m['choices'])}")
            or ("ge" in m and not value >= m["ge"] and f"must be >= {m['ge']}")
            or ("gt" in m and not value > m["gt"] and f"must be > {m['gt']}")
            or ("le" in m and not value <= m["le"] and f"must be <= {m['le']}")
            or ("lt" in m and not value < m["lt"] and f"must be < {m['lt']}")
            or ("check" in m and m["check"](OmegaConf.to_container(value) if isinstance(value, ListConfig) else value))
        )
        if bad:
            raise ConfigError(f"{where}: {key} = {value!r} {bad}")


BASE = "base"  # the top-level key naming the files a config file builds on


def _kind(schema: Any) -> str:
    return "training" if schema is Config else schema.__name__.removesuffix("Config").lower()


def find_config(ref: str | Path, including: str | Path) -> Path | None:
    """A config file named inside ``including``: absolute as written; relative: beside ``including``,
    else from the working directory. None when neither exists."""
    ref = Path(ref)
    here = Path(os.path.normpath(Path(including).parent / ref))
    return next((p for p in ([ref] if ref.is_absolute() else [here, ref]) if p.is_file()), None)


def _foreign_keys(data: dict, node: DictConfig, prefix: str = "") -> list[str]:
    """Keys of a file (a path by its first part) that the schema ``node`` does not have, looking into
    its typed groups (``data``, ``trainer``, ...): what tells a base of another kind."""
    out = []
    for key, value in data.items():
        head = str(key).split(".")[0]
        if head not in node:
            out.append(prefix + head)
        elif isinstance(value, dict) and "." not in str(key) and isinstance(node[head], DictConfig) \
                and dataclasses.is_dataclass(OmegaConf.get_type(node[head])):
            out += _foreign_keys(value, node[head], f"{prefix}{head}.")
    return sorted(out)


def config_layers(path: str | Path, schema: Any, other_base: tuple[Any, str] | None = None) -> list[tuple[str, dict]]:
    """(file, its own keys without ``base``) in the order they apply: each file's bases first,
    recursively and left to right, then the file. ``other_base=(schema, field)``: a base of that kind
    is no error but the layer ``{field: its path}`` (a search config's ``base:`` naming the training
    config it searches over)."""
    layers: list[tuple[str, dict]] = []
    seen: set[Path] = set()

    def visit(p: Path, chain: list[Path], including: Path | None) -> None:
        if p.resolve() in {c.resolve() for c in chain}:
            raise ConfigError(f"{including}: base cycle {' -> '.join(map(str, [*chain, p]))}")
        if p.resolve() in seen:
            return
        seen.add(p.resolve())
        data = read_yaml(p)
        bases = data.pop(BASE, None)
        foreign = _foreign_keys(data, OmegaConf.structured(schema)) if including is not None else []
        if foreign and other_base and not _foreign_keys(data, OmegaConf.structured(other_base[0])):
            layers.append((str(p), {other_base[1]: str(p)}))
            return
        if foreign:
            raise ConfigError(f"{including}: base {p} is not a {_kind(schema)} config (its keys {foreign} are not "
                              f"{_kind(schema)} keys)")
        refs = [bases] if isinstance(bases, str) else [] if bases is None else bases
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise ConfigError(f"{p}: base must be a file or a list of files, got {bases!r}")
        for ref in refs:
            found = find_config(ref, p)
            if found is None:
                raise ConfigError(f"{p}: base {ref} not found (looked beside {p} and in the working directory)")
            visit(found, [*chain, p], p)
        layers.append((str(p), data))

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    visit(path, [], None)
    return layers


def set_paths(cfg: DictConfig, paths: dict, where: str, schema: Any = None) -> None:
    """Set each ``{dotted key: value}`` as ``key=value`` would: a mapping or a list replaces what was there."""
    for key, value in paths.items():
        guard(lambda: OmegaConf.update(cfg, str(key), value, merge=False), f"{where}: '{key}'", schema)


def load_structured(
    schema: Any,
    path: str | Path | None = None,
    overrides: list[str] = (),
    updates: dict | None = None,
    overlay: dict | None = None,
    other_base: tuple[Any, str] | None = None,
) -> DictConfig:
    """``schema`` (a dataclass) <- YAML file and its bases (module docstring) <- ``overlay``
    (``{path: value}``) <- ``key=value`` overrides <- ``updates`` (``{key: value}`` with structured
    values, for code), every unknown key an error that lists the valid ones. Shared by training, MMA,
    extraction, search and ensemble configs. A dict or list value of a path replaces the old one
    (``loss={pcc: 1.0}`` drops l2); a scalar sets one key; list items by index (``a.0.b=1``)."""
    cfg = OmegaConf.structured(schema)
    for file, data in config_layers(path, schema, other_base) if path is not None else []:
        plain = {k: v for k, v in data.items() if "." not in str(k)}
        cfg = guard(lambda: OmegaConf.merge(cfg, plain), file, schema)
        set_paths(cfg, {k: v for k, v in data.items() if "." in str(k)}, file, schema)
    set_paths(cfg, overlay or {}, "overlay", schema)
    for item in overrides:
        key, value = parse_override(item)
        guard(lambda: OmegaConf.update(cfg, key, value, merge=False), f"override '{item}'", schema)
    for key, value in (updates or {}).items():
        guard(lambda: OmegaConf.update(cfg, key, value, merge=False), f"update '{key}'", schema)
    check_rules(cfg, schema, str(path) if path is not None else "config")
    return cfg


def load_config(
    path: str | Path | None = None, overrides: list[str] = (), updates: dict | None = None, overlay: dict | None = None
) -> DictConfig:
    """The training config (``Config``); see ``load_structured``. Encoder presets are expanded here
    (`eri.models.presets`), so the config holds every size explicitly. ``out`` defaults to
    ``runs/<the named file's name>`` (not a base's)."""
    from eri.models.presets import expand_encoder

    cfg = load_structured(Config, path, overrides, updates, overlay)
    if cfg.out is None and path is not None:
        cfg.out = f"runs/{Path(path).stem}"
    if not cfg.loss:
        cfg.loss = {"l2": 1.0}
    loss_weights(OmegaConf.to_container(cfg.loss), f"{path or 'config'}: loss")
    if not cfg.model.branches:
        raise ConfigError("model.branches is empty: a config must define at least one branch")
    for i, branch in enumerate(cfg.model.branches):
        if not isinstance(branch, DictConfig) or not isinstance(branch.get("encoder"), DictConfig):
            raise ConfigError(f"model.branches[{i}] must be a mapping with an encoder mapping, got {branch}")
        encoder = OmegaConf.to_container(branch.encoder)
        if cfg.model.preset and "preset" not in encoder:
            encoder["preset"] = cfg.model.preset
        branch.encoder = expand_encoder(encoder, f"model.branches[{i}].encoder")
    return cfg


def loss_weights(weights: dict, where: str = "loss") -> dict[str, float]:
    """Loss weights as floats; a ConfigError for one that is not a finite number >= 0 (a negative
    weight maximises that error) or when all are 0 (nothing to train on). Terms: `eri.training.losses`."""
    out = {}
    for k, v in weights.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{k} = {v!r}: a loss weight must be a number >= 0") from None
        if not math.isfinite(out[k]) or out[k] < 0:
            raise ConfigError(f"{where}.{k} = {v!r}: a loss weight must be a finite number >= 0 "
                              "(a negative weight maximises that error)")
    if weights and not any(out.values()):
        raise ConfigError(f"{where}: every weight is 0 ({out}); give at least one term a weight > 0")
    return out


def streams_of(cfg: DictConfig) -> list[str]:
    return list(dict.fromkeys(s for b in cfg.model.branches for s in b["streams"]))


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
