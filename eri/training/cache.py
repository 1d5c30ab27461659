"""The run cache shared by everything that trains many configs (ablation tables, ensembles, the
demo-variants table): a run directory named by the hash of everything that changes its numbers, so a
finished config is read, never retrained, and an interrupted one resumes.

    <runs>/<run_key(cfg)>/   an ordinary run directory (tools/train.py's layout)

`run_key` hashes the resolved config's settings that differ from the defaults (leaving out keys that
cannot change the numbers) and, for a synthetic preset, the generator's own hash of its knobs, so a
recalibrated generator is not served runs trained on the old data (a real dataset at ``data.root`` is
taken as fixed). Presets are expanded before hashing, so a changed encoder preset is a new key too.
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from eri.config import NOT_NUMERIC
from eri.errors import InputError
from eri.io import atomic_write_json, stable_hash
from eri.runs import METRICS

# Bump CACHE_VERSION when a default that changes numbers changes (old keys then miss).
CACHE_VERSION = 1


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def run_key(cfg: DictConfig) -> str:
    """The config's settings that differ from the schema's defaults (so adding a key to eri with a
    default does not rename every cached run), minus keys that cannot change the numbers
    (`eri.config.NOT_NUMERIC`: a finished run is found whatever they were), plus the generator's hash."""
    defaults = dict(_flat(OmegaConf.to_container(OmegaConf.structured(OmegaConf.get_type(cfg)))))
    own = {k: v for k, v in _flat(OmegaConf.to_container(cfg, resolve=True))
           if k not in NOT_NUMERIC and (k not in defaults or defaults[k] != v)}
    if cfg.data.synthetic:
        from eri.data import synthetic

        own["synthetic_knobs"] = synthetic.knob_hash(synthetic.resolve_preset(cfg.data.synthetic), cfg.data.synthetic_seed)
    return stable_hash({"config": own, "cache_version": CACHE_VERSION}, "sha1")


def cached_train(cfg: DictConfig, runs: str | Path, quiet: bool = False) -> tuple[dict, bool, Path]:
    """``(metrics, trained, run_dir)``: a finished run of the same key is read, not retrained. Processes
    sharing ``runs`` take a lock per key, so one trains while the others wait and then read it.
    ``quiet``: the run prints no table of its own (`eri.training.run.train`)."""
    from eri.training.run import train
    from eri.training.skeleton import return_freed_memory

    out = Path(runs) / run_key(cfg)
    done = out / METRICS
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return _read(done), False, out
        cfg = cfg.copy()
        cfg.out = str(out)
        t = time.perf_counter()
        metrics = train(cfg, quiet=quiet)
        metrics["train_seconds"] = round(time.perf_counter() - t, 1)
        atomic_write_json(done, metrics)  # rewritten with the time it took
    return_freed_memory()  # the next run of this process starts from the memory this one held before it
    return metrics, True, out


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is damaged ({type(e).__name__}: {e}); delete its run folder to retrain it") from None
