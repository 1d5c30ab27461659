"""Ensemble members: trained through the shared run cache (or read from existing run directories),
each reduced to its predictions on the fit set and on test, and checked to share one dataset.

A member is one model: one run per seed, or, over ``folds``, the K runs of one seed: each predicts
its held-out fold, so together they give out-of-fold predictions for the whole fold pool, and their
test predictions are averaged. The *fit set* a combiner learns from is the val split (plain members)
or the fold pool (cross-validated members); members must agree on it, so mixing both kinds, or
members trained on other labels, splits, features or folds, is refused. The data is compared by its
signature (`eri.data.signature`), not by where it lies: members trained before a dataset moved still
ensemble, and a member's labels are the ones its runs kept (``labels.csv``, `eri.runs`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from eri.config import load_config
from eri.constants import EMOTIONS
from eri.data.signature import differences
from eri.errors import InputError
from eri.progress import Units
from eri.runs import CONFIG, METRICS, Run
from eri.training.cache import cached_train


@dataclass
class Member:
    name: str
    runs: list  # run directories
    fit: pd.DataFrame  # File_ID -> 7 intensities on the fit set (val, or out-of-fold)
    test: pd.DataFrame  # File_ID -> 7 intensities on test
    data: dict  # what the member was trained with, for the record (see `data_record`)
    signature: dict  # the dataset signature its runs share (`eri.data.signature`)
    labels: pd.DataFrame  # File_ID -> the 7 labels its runs were scored with, fit set and test
    scores: dict = field(default_factory=dict)  # per-run metrics.json, for the record

    @property
    def chose_on_fit_set(self) -> bool:
        """Whether its runs picked their epoch on the very videos a combiner is fitted on (the val
        split; out-of-fold members only with ``cv.select: best``): the fit set's scores are then optimistic."""
        cv = self.data["cv"]
        return cv is None or cv.get("select") == "best"

    @property
    def ceiling(self) -> dict | None:
        """Its runs' synthetic ceiling, as their metrics.json recorded it (None on real data)."""
        return next(iter(self.scores.values()), {}).get("ceiling")


def data_record(cfg) -> dict:
    """What a run was trained with: ``root`` (where it was), layout, synthetic preset and the folds
    (``cv`` without the fold). Members must agree on the folds; the data itself is compared by signature."""
    d = cfg.data
    cv = OmegaConf.to_container(d.cv) if d.cv.folds else None
    if cv:
        cv.pop("fold")
    return {"root": os.path.abspath(d.root), "layout": d.layout, "synthetic": d.synthetic,
            "synthetic_seed": d.synthetic_seed if d.synthetic else None, "cv": cv}


def _read_run(path: Path, name: str) -> Member:
    """One run directory as a member: its predictions, what it was trained with, its dataset signature
    and the val and test labels it was scored with."""
    if not (path / CONFIG).is_file():
        raise InputError(f"{path}: no config.yaml: not a run directory")
    run = Run(path)
    metrics = run.metrics if (path / METRICS).is_file() else {}
    table = run.label_table
    labels = table.loc[table["split"].isin(["val", "test"]), list(EMOTIONS)]
    signature, _ = run.saved_or_recomputed_signature()
    return Member(name, [path], run.predictions("val"), run.predictions("test"), data_record(run.config), signature,
                  labels, {str(path): metrics})


def _other_data(a: str, b: str, data_a: dict, data_b: dict, sig_a: dict, sig_b: dict) -> str | None:
    """Why ``b`` was not trained on the data of ``a`` (None: it was): other folds, or other labels,
    splits or features by content (`eri.data.signature.differences`); where the data lies does not matter."""
    if data_a["cv"] != data_b["cv"]:
        return f"{b} was trained on other folds than {a} (data.cv {data_b['cv']} vs {data_a['cv']})"
    diff = differences(sig_a, sig_b, common_streams=True)
    return f"{b} was trained on other data than {a}: {'; '.join(diff)}" if diff else None


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
            member = _read_run(Path(entry["run"]), name)
            if member.data["cv"]:
                raise InputError(f"{entry['run']} is one fold of a cross-validation: give the member as config + folds")
            members.append(member)
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
    parts = [_read_run(r, name) for r in runs]
    fit = pd.concat([p.fit for p in parts])
    if fit.index.duplicated().any():
        raise InputError(f"member {name}: a video is held out by two folds ({list(fit.index[fit.index.duplicated()][:3])})")
    tests = [p.test for p in parts]
    if any(not t.index.equals(tests[0].index) for t in tests):
        raise InputError(f"member {name}: its runs predict different test videos")
    first = parts[0]
    for r, p in zip(runs[1:], parts[1:]):
        why = _other_data(str(runs[0]), str(r), first.data, p.data, first.signature, p.signature)
        if why:
            raise InputError(f"member {name}: {why}")
    labels = pd.concat([p.labels for p in parts])
    labels = labels[~labels.index.duplicated()]  # test rows: in every fold's labels
    return Member(name, list(runs), fit.sort_index(), sum(tests) / len(tests), first.data, first.signature, labels,
                  {k: v for p in parts for k, v in p.scores.items()})


def check_members(members: list[Member]) -> None:
    """Refuse members that were not trained on the same labels, splits, features and folds."""
    ref = members[0]
    for m in members[1:]:
        why = _other_data(f"member {ref.name}", f"member {m.name}", ref.data, m.data, ref.signature, m.signature)
        if why:
            raise InputError(why)
        for split, a, b in (("fit", ref.fit, m.fit), ("test", ref.test, m.test)):
            if set(a.index) != set(b.index):
                raise InputError(
                    f"member {m.name} predicts other {split} videos than {ref.name} "
                    f"({len(set(a.index) ^ set(b.index))} differ): a different store or split"
                )


def labels(members: list[Member], ids) -> np.ndarray:
    """(N, 7) labels of ``ids`` (NaN where unlabelled), as the first member's runs were scored with."""
    return members[0].labels.reindex(list(ids)).to_numpy(np.float64)


def stack(members: list[Member], split: str) -> tuple[list[str], np.ndarray]:
    """Ids and (M, N, 7) predictions of every member on ``fit`` or ``test``, in one video order."""
    ids = sorted(getattr(members[0], split).index)
    return ids, np.stack([getattr(m, split).loc[ids].to_numpy(np.float64) for m in members])
