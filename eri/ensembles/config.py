"""The ensemble config (``configs/ensemble/*.yaml``): its members and how they are combined.

    members:                     # each: a training config plus overrides, over seeds and/or folds
      - {name: demo, config: configs/demo.yaml, overrides: [], seeds: [0, 1, 2, 3, 4]}
      - {name: demo-cv, config: configs/demo.yaml, seeds: [0], folds: 5}   # K runs: data.cv.folds=K, fold=i
      - {name: old, run: runs/demo}                                          # an existing run directory
    combiner: mean               # mean | weights | best | stack (the ensemble's output)
    cross_fit: 5                 # parts of the fit set: val is reported by fitting on 4, scoring the 5th
    overrides: []                # key=value applied to every trained member (e.g. a shorter budget)
    runs: runs/cache             # the run cache shared with tools/ablate.py (eri.training.cache)
    search: {n_trials: 0}        # > 0: Optuna chooses the members and the combiner on cross-fitted val

A member's training config is found as a config file's ``base:`` is (`eri.config`): beside the
ensemble file, else from the working directory (``configs/demo.yaml`` as the shipped files write it),
and it may itself be an overlay (``base:`` + dotted keys); its ``overrides`` apply on top. An ensemble
file may build on other ensemble files with ``base:``.

A member over ``seeds`` is one model per seed; over ``folds`` each seed is K runs whose held-out
predictions together cover the fold pool (out-of-fold) and whose test predictions are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from eri.config import find_config, load_structured, rule
from eri.errors import ConfigError

COMBINER_NAMES = ("mean", "weights", "best", "stack")
MEMBER_KEYS = ("name", "config", "overrides", "seeds", "folds", "run")


@dataclass
class SearchConfig:
    n_trials: int = rule(0, ge=0)  # 0: no search, use `combiner` and every member
    seed: int = 0
    combiners: list = field(default_factory=lambda: list(COMBINER_NAMES))


@dataclass
class EnsembleConfig:
    members: list = field(default_factory=list)
    combiner: str = rule("mean", choices=COMBINER_NAMES)
    cross_fit: int = rule(5, ge=2)
    cross_fit_seed: int = 0
    overrides: list = field(default_factory=list)
    runs: str = "runs/cache"
    out: Optional[str] = None
    bootstrap_resamples: int = rule(1000, ge=100)
    bootstrap_seed: int = 0
    search: SearchConfig = field(default_factory=SearchConfig)


def load_ensemble_config(path: str | Path | None, overrides: list[str] = (), runs: list[str] = ()) -> DictConfig:
    """Schema <- YAML <- ``key=value``; ``runs``: existing run directories added as members (``--runs``)."""
    cfg = load_structured(EnsembleConfig, path, overrides)
    for r in runs:
        cfg.members.append({"name": Path(r).name, "run": str(r)})
    if not cfg.members:
        raise ConfigError(f"{path or 'ensemble'}: no members: list some under members: or give --runs")
    names = []
    for i, m in enumerate(cfg.members):
        m = OmegaConf.to_container(m) if isinstance(m, DictConfig) else dict(m)
        unknown = sorted(set(m) - set(MEMBER_KEYS))
        if unknown or ("config" in m) == ("run" in m):
            raise ConfigError(
                f"members[{i}]: give either config (+ overrides, seeds, folds) or run; "
                f"unknown key(s) {unknown}; valid keys: {list(MEMBER_KEYS)}"
            )
        if "folds" in m and m["folds"] is not None and int(m["folds"]) < 2:
            raise ConfigError(f"members[{i}].folds must be >= 2, got {m['folds']}")
        names.append(m.get("name") or Path(m.get("config") or m["run"]).stem)
        found = find_config(m["config"], path) if isinstance(m.get("config"), str) and path is not None else None
        if found is not None:  # else tools/ensemble.py says it is missing when it trains that member
            cfg.members[i].config = str(found)
    if len(set(names)) != len(names):
        raise ConfigError(f"members need distinct names, got {names}")
    if cfg.out is None:
        cfg.out = f"runs/ensemble/{Path(path).stem if path else 'runs'}"
    return cfg
