"""The run cache shared by everything that trains many configs (ablation tables, ensembles, the
demo comparison): a run directory named by the hash of everything that changes its numbers, so a
finished config is read, never retrained, and an interrupted one resumes.

    <runs>/<run_key(cfg)>/   an ordinary run directory (tools/train.py's layout)

`run_key` hashes the resolved config without ``out`` and, for a synthetic preset, the generator's
own hash of its knobs, so a recalibrated generator is not served runs trained on the old data (a
real dataset at ``data.root`` is taken as fixed). Presets are expanded before hashing, so a changed
encoder preset is a new key too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig

from eri.config import to_yaml
from eri.io import atomic_write_json, stable_hash


def run_key(cfg: DictConfig) -> str:
    c = cfg.copy()
    c.out = None
    c.model.preset = None  # a label once the sizes are expanded: configs that differ only there are one run
    blob = to_yaml(c)
    if cfg.data.synthetic:
        from eri.data import synthetic

        blob += f"\nsynthetic: {synthetic.knob_hash(synthetic.resolve_preset(cfg.data.synthetic), cfg.data.synthetic_seed)}"
    return stable_hash(blob, "sha1")


def cached_train(cfg: DictConfig, runs: str | Path) -> tuple[dict, bool, Path]:
    """``(metrics, trained, run_dir)``: a finished run of the same key is read, not retrained."""
    from eri.training.run import train

    out = Path(runs) / run_key(cfg)
    done = out / "metrics.json"
    if done.exists():
        return json.loads(done.read_text()), False, out
    cfg = cfg.copy()
    cfg.out = str(out)
    t = time.perf_counter()
    metrics = train(cfg)
    metrics["train_seconds"] = round(time.perf_counter() - t, 1)
    atomic_write_json(done, metrics)  # rewritten with the time it took
    return metrics, True, out
