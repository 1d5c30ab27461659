"""Ensemble members: trained through the shared run cache (or read from existing run directories),
each reduced to its predictions on the fit set and on test, and checked to share one dataset.

A member is one model: one run per seed, or, over ``folds``, the K runs of one seed: each predicts
its held-out fold, so together they give out-of-fold predictions for the whole fold pool, and their
test predictions are averaged. The *fit set* a combiner learns from is the val split (plain members)
or the fold pool (cross-validated members); members must agree on it, so mixing both kinds, or
members trained on another store, split or fold assignment, is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from eri.config import load_config
from eri.data.labels import labels_of
from eri.errors import InputError
from eri.progress import Units
from eri.training.cache import cached_train
from eri.training.run import predictions


@dataclass
class Member:
    name: str
    runs: list  # run directories
    fit: pd.DataFrame  # File_ID -> 7 intensities on the fit set (val, or out-of-fold)
    test: pd.DataFrame  # File_ID -> 7 intensities on test
    data: dict  # what the member was trained on (see `data_signature`)
    scores: dict = field(default_factory=dict)  # per-run metrics.json, for the record

    @property
    def chose_on_fit_set(self) -> bool:
        """Whether its runs picked their epoch on the very videos a combiner is fitted on (the val
        split; out-of-fold members only with ``cv.select: best``): the fit set's scores are then optimistic."""
        cv = self.data["cv"]
        return cv is None or cv.get("select") == "best"


def data_signature(cfg) -> dict:
    """The dataset a run saw: members of one ensemble must agree on all of it."""
    d = cfg.data
    cv = OmegaConf.to_container(d.cv) if d.cv.folds else None
    if cv:
        cv.pop("fold")
    return {"root": os.path.abspath(d.root), "layout": d.layout, "synthetic": d.synthetic,
            "synthetic_seed": d.synthetic_seed if d.synthetic else None, "cv": cv}


def _read_run(run: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    if not (run / "config.yaml").is_file():
        raise InputError(f"{run}: no config.yaml: not a run directory")
    cfg = load_config(run / "config.yaml")
    try:
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    except ValueError as e:
        raise InputError(f"{run / 'metrics.json'} is damaged ({e})") from None
    return predictions(run, "val"), predictions(run, "test"), data_signature(cfg), metrics


def build_members(ecfg, progress=print, shard: tuple[int, int] = (0, 1)) -> list[Member] | None:
    """Train the missing members (through the run cache), read the finished ones, return them checked.
    ``shard=(k, n)``: train only every n-th run (member x seed x fold) from the k-th and return None, so
    several processes or a SLURM array share the training; an unsharded rerun then combines (all cached)."""
    entries = [OmegaConf.to_container(e) if not isinstance(e, dict) else e for e in ecfg.members]
    jobs = sum(len(e.get("seeds") or [0]) * (e.get("folds") or 1) for e in entries if not e.get("run"))
    units = Units(len(range(shard[0], jobs, shard[1])), progress)  # one [k/N] line per member run
    members, job = [], -1
    for entry in entries:
        name = entry.get("name") or Path(entry.get("config") or entry["run"]).stem
        if entry.get("run"):
            fit, test, sig, m = _read_run(Path(entry["run"]))
            if sig["cv"]:
                raise InputError(f"{entry['run']} is one fold of a cross-validation: give the member as config + folds")
            members.append(Member(name, [Path(entry["run"])], fit, test, sig, {"run": m}))
            continue
        for seed in entry.get("seeds") or [0]:
            k = entry.get("folds")
            runs = []
            for fold in range(k or 1):
                job += 1
                if shard[1] > 1 and job % shard[1] != shard[0]:
                    continue
                extra = [f"seed={seed}", "trainer.progress_bar=false"]
                extra += [f"data.cv.folds={k}", f"data.cv.fold={fold}"] if k else []
                units.start()
                cfg = load_config(entry["config"], [*entry.get("overrides", []), *ecfg.overrides, *extra])
                metrics, trained, run = cached_train(cfg, ecfg.runs, quiet=True)
                val = metrics.get("val", {}).get("mean_pcc")
                units.done(f"member '{name}' seed {seed}" + (f" fold {fold}/{k}" if k else ""),
                           f"val {val:.4f}" if val is not None else "val not scored", trained=trained)
                runs.append(run)
            if shard[1] > 1:
                continue
            members.append(_assemble(f"{name}/seed{seed}" if len(entry.get("seeds") or [0]) > 1 else name, runs))
    if shard[1] > 1:
        return None
    check_members(members)
    return members


def _assemble(name: str, runs: list[Path]) -> Member:
    """One member from its runs: K folds' held-out predictions side by side, their test predictions averaged."""
    parts = [_read_run(r) for r in runs]
    fit = pd.concat([p[0] for p in parts])
    if fit.index.duplicated().any():
        raise InputError(f"member {name}: a video is held out by two folds ({list(fit.index[fit.index.duplicated()][:3])})")
    tests = [p[1] for p in parts]
    if any(not t.index.equals(tests[0].index) for t in tests):
        raise InputError(f"member {name}: its runs predict different test videos")
    test = sum(tests) / len(tests)
    sigs = [p[2] for p in parts]
    if any(s != sigs[0] for s in sigs):
        raise InputError(f"member {name}: its runs were trained on different data ({sigs[0]} vs others)")
    return Member(name, list(runs), fit.sort_index(), test, sigs[0], {str(r): p[3] for r, p in zip(runs, parts)})


def check_members(members: list[Member]) -> None:
    """Refuse members that were not trained on the same store, splits and folds."""
    ref = members[0]
    for m in members[1:]:
        if m.data != ref.data:
            diff = {k: (ref.data[k], m.data[k]) for k in ref.data if ref.data[k] != m.data[k]}
            raise InputError(f"member {m.name} was trained on other data than {ref.name}: {diff}")
        for split, a, b in (("fit", ref.fit, m.fit), ("test", ref.test, m.test)):
            if set(a.index) != set(b.index):
                raise InputError(
                    f"member {m.name} predicts other {split} videos than {ref.name} "
                    f"({len(set(a.index) ^ set(b.index))} differ): a different store or split"
                )


def labels(data: dict, ids) -> np.ndarray:
    """(N, 7) labels of ``ids`` (NaN where unlabeled) from the dataset the members were trained on."""
    return labels_of(data["root"], data["layout"], ids)


def stack(members: list[Member], split: str) -> tuple[list[str], np.ndarray]:
    """Ids and (M, N, 7) predictions of every member on ``fit`` or ``test``, in one video order."""
    ids = sorted(getattr(members[0], split).index)
    return ids, np.stack([getattr(m, split).loc[ids].to_numpy(np.float64) for m in members])
