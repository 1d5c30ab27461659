"""An Optuna study over fusion choices: one config file, any number of worker processes.

A search config (``configs/search/*.yaml``, schema ``SearchConfig``) names a base training config
(the paper setting) and a search space over it. Each trial turns its sampled parameters into
``key=value`` overrides of the base config and trains with `eri.training.run.train` in its own run
directory ``<out>/trials/<NNNN>``; the objective is the best epoch's val mean PCC.

- **Paper trial first**: the base config's own values are read back into the space's parameters and
  enqueued as trial 0, so the study's best is never below the paper setting (a base config the
  space cannot express is an error naming the value).
- **Pruning**: optuna-integration's ``PyTorchLightningPruningCallback`` (it imports the ``lightning``
  package, so it works with Lightning 2.6) reports val mean PCC after each epoch; pruner
  ``median``, ``hyperband`` or ``none``.
- **Storage**: ``sqlite:///<out>/study.db`` by default; any SQLAlchemy URL (PostgreSQL) lets
  processes on many machines share the study. ``n_trials`` is the study's total, not per process:
  a worker checks the count and starts its trial under a lock (an advisory lock on PostgreSQL, a
  file lock beside a SQLite file), so workers together run exactly ``n_trials``. Other databases
  get no lock: up to one extra trial per worker is possible there.
- **Failures and interruption**: a trial that raises is recorded FAIL with its error (user attr
  ``error``) and the study goes on. Ctrl-C marks the running trial FAIL and enqueues a retry with
  the same parameters; a killed worker's trial stops sending heartbeats and is retried by the next
  worker (``RetryHeartbeatStaleTrialCallback``). A retry resumes in its original trial's run directory
  from ``last.ckpt``. Rerunning the command continues the study up to ``n_trials``.
- **At the end** (once the study holds ``n_trials`` finished trials): the best trial's config is
  written as ``<out>/best.yaml`` (ready for ``tools/train.py --config``), retrained from scratch into
  ``<out>/best`` exactly as tools/train.py does, scored on test, and Optuna's plots are saved.

Samplers: ``tpe`` (default) or ``random``, re-seeded with ``seed + trial number`` so one process is
reproducible and parallel workers do not draw the same parameters.
"""

from __future__ import annotations

import fcntl
import inspect
import itertools
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from eri.config import ConfigError, load_config, load_structured, rule, to_yaml
from eri.io import atomic_write_bytes, atomic_write_text, mask_secrets

OBJECTIVE = "val/mean_pcc"


# ----------------------------------------------------------------------------- config schema
@dataclass
class SamplerConfig:
    name: str = rule("tpe", choices=("tpe", "random"))
    seed: int = 0
    n_startup_trials: int = rule(5, ge=0)  # tpe: random trials before the model takes over


@dataclass
class PrunerConfig:
    name: str = rule("median", choices=("median", "hyperband", "none"))
    n_startup_trials: int = rule(2, ge=0)  # median: trials that are never pruned
    n_warmup_steps: int = rule(1, ge=0)  # median: epochs before a trial can be pruned
    min_resource: int = rule(1, ge=1)  # hyperband: epochs of the first rung
    reduction_factor: int = rule(3, ge=2)  # hyperband


@dataclass
class SearchConfig:
    base: str = "configs/demo.yaml"  # the paper setting: trial 0, and what every trial overrides
    base_overrides: list = field(default_factory=list)  # key=value applied to every trial (e.g. a shorter budget)
    out: Optional[str] = None  # study folder; default runs/search/<config file name>
    study_name: Optional[str] = None  # default: the config file name
    storage: Optional[str] = None  # SQLAlchemy URL; default sqlite:///<out>/study.db
    n_trials: int = rule(20, ge=1)  # the study's total over every worker and rerun
    timeout: Optional[float] = rule(None, gt=0)  # seconds: this process starts no trial after that
    heartbeat_s: int = rule(60, ge=1)  # a RUNNING trial silent for 2x this is failed and retried
    max_retry: int = rule(2, ge=0)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    space: dict = field(default_factory=dict)  # see SPACE_KEYS
    encoder_defaults: dict = field(default_factory=dict)  # encoder name -> keys for an encoder the base does not use
    final: bool = True  # retrain the best trial and score it on test when the study is done
    final_overrides: list = field(default_factory=list)  # key=value for that retrain (e.g. more epochs)


# A list is a categorical choice; {low, high, log} a range (ints stay ints). Absent: not searched.
SPACE_KEYS = {
    "branches": "candidate branches, name -> streams; a trial uses a non-empty subset (parameter 'streams')",
    "min_branches": "fewest branches in a subset (default 1)",
    "max_branches": "most branches in a subset (default all)",
    "encoder": "per branch: encoder name",
    "hidden": "per branch: encoder width",
    "layers": "per branch: recurrent layers (gru_transformer gru_layers, lstm layers, masked_rnn rnn_layers)",
    "blocks": "per branch, gru_transformer only: transformer blocks",
    "dropout": "per branch: dropout (encoders that have one)",
    "fusion": "fusion name",
    "lr": "learning rate",
    "weight_decay": "weight decay",
    "loss_pcc": "loss mix: weight of 1 - PCC, the L2 loss gets 1 - it",
}
LAYER_KEY = {"gru_transformer": "gru_layers", "lstm": "layers", "masked_rnn": "rnn_layers"}


def load_search_config(path: str | Path, overrides: list[str] = ()) -> DictConfig:
    """Schema <- YAML <- ``key=value``; unknown keys (also inside ``space``) are errors listing the valid ones."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"search config {path} not found")
    cfg = load_structured(SearchConfig, path, overrides)
    unknown = sorted(set(cfg.space) - set(SPACE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} in space; valid keys: {list(SPACE_KEYS)}")
    cfg.out = cfg.out or f"runs/search/{path.stem}"
    cfg.study_name = cfg.study_name or path.stem
    cfg.storage = cfg.storage or f"sqlite:///{Path(cfg.out).resolve() / 'study.db'}"
    return cfg


# ----------------------------------------------------------------------------- space <-> config
def _subsets(space: dict) -> list[str]:
    names = list(space["branches"])
    lo, hi = int(space.get("min_branches", 1)), int(space.get("max_branches", len(names)))
    return ["+".join(c) for k in range(max(lo, 1), hi + 1) for c in itertools.combinations(names, k)]


def _suggest(trial, name: str, spec):
    if isinstance(spec, (list, tuple)):
        return trial.suggest_categorical(name, list(spec))
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if isinstance(low, int) and isinstance(high, int):
        return trial.suggest_int(name, low, high, log=log)
    return trial.suggest_float(name, float(low), float(high), log=log)


def _contains(spec, value) -> bool:
    if isinstance(spec, (list, tuple)):
        return value in list(spec)
    return spec["low"] <= value <= spec["high"]


def _signature_default(cls, key: str):
    p = inspect.signature(cls.__init__).parameters.get(key)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def _accepts(cls, key: str) -> bool:
    return key in inspect.signature(cls.__init__).parameters


class Space:
    """The search space of one search config, over one base training config."""

    def __init__(self, scfg: DictConfig):
        self.space = OmegaConf.to_container(scfg.space, resolve=True)
        self.encoder_defaults = OmegaConf.to_container(scfg.encoder_defaults, resolve=True)
        self.base_path, self.base_overrides = scfg.base, list(scfg.base_overrides)
        self.base = load_config(self.base_path, self.base_overrides)
        self.base_branches = OmegaConf.to_container(self.base.model.branches, resolve=True)
        self.base_fusion = OmegaConf.to_container(self.base.model.fusion, resolve=True)

    # a candidate branch name for each base branch (matched by its streams)
    def _base_branch(self, name: str) -> dict | None:
        streams = list(self.space["branches"][name])
        return next((b for b in self.base_branches if list(b["streams"]) == streams), None)

    def overrides(self, trial) -> list[str]:
        """Sample one configuration; return it as overrides of the base config."""
        from eri.models.encoders import ENCODERS
        from eri.models.fusion import FUSIONS

        sp, out = self.space, []
        if "branches" in sp:
            chosen = _suggest(trial, "streams", _subsets(sp)).split("+")
            branches = []
            for name in chosen:
                base_b = self._base_branch(name) or {}
                enc_name = (
                    _suggest(trial, f"{name}.encoder", sp["encoder"])
                    if "encoder" in sp
                    else (base_b.get("encoder", {}).get("name") or self._only_encoder())
                )
                if base_b and base_b["encoder"]["name"] == enc_name:
                    enc = dict(base_b["encoder"])
                else:
                    enc = {"name": enc_name, **self.encoder_defaults.get(enc_name, {})}
                cls = ENCODERS[enc_name]
                if "hidden" in sp:
                    enc["hidden"] = _suggest(trial, f"{name}.hidden", sp["hidden"])
                if "layers" in sp and enc_name in LAYER_KEY:
                    enc[LAYER_KEY[enc_name]] = _suggest(trial, f"{name}.layers", sp["layers"])
                if "blocks" in sp and enc_name == "gru_transformer":
                    enc["blocks"] = _suggest(trial, f"{name}.blocks", sp["blocks"])
                if "dropout" in sp and _accepts(cls, "dropout"):
                    enc["dropout"] = _suggest(trial, f"{name}.dropout", sp["dropout"])
                b = {"name": name, "streams": list(sp["branches"][name]), "encoder": enc}
                if base_b.get("center") is not None:
                    b["center"] = base_b["center"]
                branches.append(b)
            out.append("model.branches=" + json.dumps(branches))
        if "fusion" in sp:
            name = _suggest(trial, "fusion", sp["fusion"])
            cls = FUSIONS[name]
            fusion = {"name": name, **{k: v for k, v in self.base_fusion.items() if k != "name" and _accepts(cls, k)}}
            out.append("model.fusion=" + json.dumps(fusion))
        if "lr" in sp:
            out.append(f"optim.lr={_suggest(trial, 'lr', sp['lr'])!r}")
        if "weight_decay" in sp:
            out.append(f"optim.weight_decay={_suggest(trial, 'weight_decay', sp['weight_decay'])!r}")
        if "loss_pcc" in sp:
            w = float(_suggest(trial, "loss_pcc", sp["loss_pcc"]))
            loss = {k: v for k, v in {"l2": round(1.0 - w, 12), "pcc": w}.items() if v > 0}
            out.append("loss=" + json.dumps(loss))
        return out

    def _only_encoder(self) -> str:
        names = {b["encoder"]["name"] for b in self.base_branches}
        if len(names) != 1:
            raise ConfigError(
                f"{self.base_path}: branches use several encoders {sorted(names)}; add 'encoder' to the space"
            )
        return names.pop()

    def paper_params(self) -> dict:
        """The base config expressed as this space's parameters (enqueued as the first trial)."""
        from eri.models.encoders import ENCODERS

        sp, params = self.space, {}

        def put(name, key, value):
            if not _contains(sp[key], value):
                raise ConfigError(
                    f"the base config {self.base_path} has {name} = {value!r}, outside the search space "
                    f"space.{key} = {sp[key]}: add it so the paper setting can be trial 0"
                )
            params[name] = value

        if "branches" in sp:
            names = []
            for b in self.base_branches:
                match = [n for n, s in sp["branches"].items() if list(s) == list(b["streams"])]
                if not match:
                    raise ConfigError(
                        f"the base config {self.base_path} has a branch over {list(b['streams'])}, "
                        f"which is not a candidate in space.branches {dict(sp['branches'])}"
                    )
                names.append(match[0])
            subset = "+".join(n for n in sp["branches"] if n in names)
            if subset not in _subsets(sp):
                raise ConfigError(f"the base config's branches {subset} are outside min/max_branches of the space")
            params["streams"] = subset
            for name in names:
                enc = self._base_branch(name)["encoder"]
                cls = ENCODERS[enc["name"]]
                if "encoder" in sp:
                    put(f"{name}.encoder", "encoder", enc["name"])
                if "hidden" in sp:
                    put(f"{name}.hidden", "hidden", enc.get("hidden", _signature_default(cls, "hidden")))
                if "layers" in sp and enc["name"] in LAYER_KEY:
                    key = LAYER_KEY[enc["name"]]
                    put(f"{name}.layers", "layers", enc.get(key, _signature_default(cls, key)))
                if "blocks" in sp and enc["name"] == "gru_transformer":
                    put(f"{name}.blocks", "blocks", enc.get("blocks", _signature_default(cls, "blocks")))
                if "dropout" in sp and _accepts(cls, "dropout"):
                    put(f"{name}.dropout", "dropout", enc.get("dropout", _signature_default(cls, "dropout")))
        if "fusion" in sp:
            put("fusion", "fusion", self.base_fusion["name"])
        if "lr" in sp:
            put("lr", "lr", float(self.base.optim.lr))
        if "weight_decay" in sp:
            put("weight_decay", "weight_decay", float(self.base.optim.weight_decay))
        if "loss_pcc" in sp:
            loss = dict(self.base.loss)
            if set(loss) - {"l2", "pcc"} or abs(sum(loss.values()) - 1.0) > 1e-9:
                raise ConfigError(
                    f"the base config's loss {loss} is not an l2/pcc mix summing to 1; drop loss_pcc from the space"
                )
            put("loss_pcc", "loss_pcc", float(loss.get("pcc", 0.0)))
        return params

    def trial_config(self, overrides: list[str], out: str | Path, extra: list[str] = ()) -> DictConfig:
        return load_config(self.base_path, [*self.base_overrides, *overrides, *extra, f"out={out}"])


# ----------------------------------------------------------------------------- storage, lock
def make_storage(url: str, heartbeat_s: int, max_retry: int):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with _quiet_experimental():
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_s,
            grace_period=2 * heartbeat_s,
            heartbeat_stale_trial_callback=retry,
        )
    except Exception as e:  # a bad URL or an unreachable server: say which
        raise ConfigError(mask_secrets(f"cannot open the study storage {url}: {type(e).__name__}: {e}")) from None
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyLock:
    """Serialises "count the trials, then start one" across workers of one study."""

    def __init__(self, url: str, study_name: str):
        self.key = zlib.crc32(study_name.encode())
        self.kind, self._held = None, None
        if url.startswith("sqlite:///"):
            self.kind, self.path = "file", Path(url[len("sqlite:///") :] + ".lock")
        elif url.startswith("postgresql"):
            import sqlalchemy as sa
            from sqlalchemy.pool import NullPool

            self.kind, self.engine = "pg", sa.create_engine(url, poolclass=NullPool)

    def acquire(self) -> None:
        if self._held is not None or self.kind is None:
            return
        if self.kind == "file":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a")
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._held = fh
        else:
            import sqlalchemy as sa

            conn = self.engine.connect()
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            conn.commit()
            self._held = conn

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if self.kind == "file":
            fcntl.flock(held, fcntl.LOCK_UN)
            held.close()
        else:
            import sqlalchemy as sa

            held.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            held.commit()
            held.close()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def slots_used(trials) -> int:
    """Trials counting toward ``n_trials``: a failed trial that has a retry counts once, through its retry."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(t.number not in retried for t in trials)


def _make_sampler(s, seed: int):
    import optuna

    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials, constant_liar=True)


def _make_pruner(p, max_epochs: int):
    import optuna

    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource, max_resource=max_epochs, reduction_factor=p.reduction_factor
        )
    return optuna.pruners.NopPruner()


# ----------------------------------------------------------------------------- the study
def pruning_callback(trial):
    """optuna-integration's Lightning pruning callback, reporting only while fitting: `train` validates
    the best checkpoint again with the same trainer after the fit, which the stock callback would
    report as one more epoch (and could prune a trial that has finished)."""
    from lightning.pytorch.trainer.states import TrainerFn
    from optuna_integration import PyTorchLightningPruningCallback

    class FitOnlyPruning(PyTorchLightningPruningCallback):
        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.state.fn == TrainerFn.FITTING:
                super().on_validation_end(trainer, pl_module)

    return FitOnlyPruning(trial, monitor=OBJECTIVE)


class Search:
    def __init__(self, scfg: DictConfig, progress=print):
        self.cfg, self.progress = scfg, progress or (lambda *_: None)
        self.out = Path(scfg.out)
        self.space = Space(scfg)
        self.lock = StudyLock(scfg.storage, scfg.study_name)
        try:
            with self.lock:  # workers starting together would race to create Optuna's tables
                self.storage = make_storage(scfg.storage, scfg.heartbeat_s, scfg.max_retry)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - an unreachable server, a bad URL or password: say which, masked
            raise ConfigError(mask_secrets(f"cannot open the study storage {scfg.storage}: {type(e).__name__}: {e}")) from None
        self.pruner = _make_pruner(scfg.pruner, int(self.space.base.trainer.max_epochs))
        self._current = None

    def _study(self, seed: int):
        import optuna

        return optuna.create_study(
            study_name=self.cfg.study_name,
            storage=self.storage,
            direction="maximize",
            sampler=_make_sampler(self.cfg.sampler, seed),
            pruner=self.pruner,
            load_if_exists=True,
        )

    def _objective(self, trial) -> float:
        import optuna

        from eri.training.run import train

        self._current = trial
        self.lock.release()  # the trial is registered: other workers may count and start theirs
        run_dir = trial.user_attrs.get("run_dir") or str(self.out / "trials" / f"{trial.number:04d}")
        trial.set_user_attr("run_dir", run_dir)  # a retry inherits it and resumes there
        try:
            overrides = self.space.overrides(trial)
            trial.set_user_attr("overrides", overrides)
            cfg = self.space.trial_config(overrides, run_dir, ["trainer.progress_bar=false"])
            t = time.perf_counter()
            metrics = train(cfg, callbacks=[pruning_callback(trial)])
            trial.set_user_attr("seconds", round(time.perf_counter() - t, 1))
            if "mean_pcc" in metrics.get("test", {}):
                trial.set_user_attr("test_mean_pcc", metrics["test"]["mean_pcc"])
            return float(metrics["val"]["mean_pcc"])
        except optuna.TrialPruned:
            raise
        except Exception as e:  # recorded with the trial; the study goes on (optimize(catch=...))
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            raise

    def _interrupted(self, study) -> None:
        """Ctrl-C during a trial: fail it now and enqueue a retry (heartbeats cover a killed worker)."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        trial, self._current = self._current, None
        if trial is None:
            return
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if frozen.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            with _quiet_experimental():
                RetryHeartbeatStaleTrialCallback(max_retry=self.cfg.max_retry)(study, frozen)
            self.progress(f"trial {trial.number} interrupted: recorded FAIL, enqueued a retry for the next run")

    def optimize(self) -> dict:
        """Run trials until the study holds ``n_trials`` (or ``timeout``); return this process's counts."""
        import optuna
        from optuna.trial import TrialState

        self.out.mkdir(parents=True, exist_ok=True)
        with self.lock:
            study = self._study(self.cfg.sampler.seed)
            if not study.trials:
                study.enqueue_trial(self.space.paper_params(), user_attrs={"paper": True})
                self.progress(
                    f"study '{self.cfg.study_name}' created in {mask_secrets(self.cfg.storage)}; trial 0 = {self.space.base_path}"
                )
        start, ran = time.perf_counter(), 0
        while self.cfg.timeout is None or time.perf_counter() - start < self.cfg.timeout:
            self.lock.acquire()
            try:
                with _quiet_experimental():
                    optuna.storages.fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                if slots_used(trials) >= self.cfg.n_trials and not any(t.state == TrialState.WAITING for t in trials):
                    break
                study = self._study(self.cfg.sampler.seed + len(trials))
                self._current = None
                study.optimize(self._objective, n_trials=1, catch=(Exception,))
            except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit
                self.lock.release()
                self._interrupted(study)
                raise KeyboardInterrupt from None
            finally:
                self.lock.release()
            if self._current is not None:  # the objective ran (optimize raises when it cannot start a trial)
                ran += 1
                number = self._current.number
                self.progress(
                    _describe(
                        next(t for t in study.get_trials(deepcopy=False) if t.number == number), self.cfg.n_trials
                    )
                )
        seconds = time.perf_counter() - start
        return {
            "trials_run": ran,
            "seconds": round(seconds, 1),
            "trials_per_hour": round(ran / seconds * 3600, 2) if ran and seconds > 0 else None,
        }

    def done(self) -> bool:
        from optuna.trial import TrialState

        trials = self._study(0).get_trials(deepcopy=False)
        return slots_used(trials) >= self.cfg.n_trials and not any(
            t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials
        )

    def finish(self, retrain: bool = True) -> dict:
        """best.yaml, its retrain scored on test, plots, trials.csv, summary.json."""
        from optuna.trial import TrialState

        from eri.training.run import train

        study = self._study(0)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise RuntimeError(f"study '{self.cfg.study_name}' has no completed trial (states: {_counts(trials)})")
        best = study.best_trial
        paper = next((t for t in trials if t.user_attrs.get("paper")), None)
        best_cfg = self.space.trial_config(
            best.user_attrs["overrides"], self.out / "best", [*self.cfg.final_overrides, "trainer.progress_bar=true"]
        )
        atomic_write_text(
            self.out / "best.yaml",
            f"# best trial {best.number} of study '{self.cfg.study_name}' "
            f"(val mean PCC {best.value:.4f}); "
            f"rerun: python tools/train.py --config {self.out / 'best.yaml'}\n" + to_yaml(best_cfg),
        )
        summary = {
            "study": self.cfg.study_name,
            "storage": mask_secrets(self.cfg.storage),
            "states": _counts(trials),
            "best_trial": best.number,
            "best_params": best.params,
            "best_val_mean_pcc": best.value,
            "paper_trial": paper.number if paper else None,
            "paper_val_mean_pcc": paper.value if paper and paper.state == TrialState.COMPLETE else None,
            "trials_per_hour": _trials_per_hour(trials),
        }
        if retrain:
            final = self.out / "best" / "metrics.json"
            wanted = load_config(self.out / "best.yaml", ["trainer.progress_bar=false"])
            if (
                final.exists()
                and (self.out / "best" / "config.yaml").exists()
                and to_yaml(load_config(self.out / "best" / "config.yaml", ["trainer.progress_bar=false"])) == to_yaml(wanted)
            ):
                metrics = json.loads(final.read_text())  # already retrained with this very config
            else:
                metrics = train(wanted)
            summary["retrain"] = {s: metrics[s]["mean_pcc"] for s in ("val", "test") if "mean_pcc" in metrics.get(s, {})}
        atomic_write_text(self.out / "trials.csv", study.trials_dataframe().to_csv(index=False))
        summary["plots"] = save_plots(study, self.out / "plots")
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2, default=str))
        return summary


class _quiet_experimental:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _counts(trials) -> dict:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _trials_per_hour(trials) -> float | None:
    """Finished trials (complete or pruned) per hour of one worker's trial time."""
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") and t.datetime_start and t.datetime_complete]
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    return round(len(done) / seconds * 3600, 2) if seconds > 0 else None


def _describe(t, n_trials: int) -> str:
    val = f"{t.value:.4f}" if t.value is not None else "-"
    extra = f" ({t.user_attrs['error']})" if "error" in t.user_attrs else ""
    return f"trial {t.number}/{n_trials}: {t.state.name} val mean PCC {val}{extra}"


def save_plots(study, folder: Path) -> dict:
    """Optuna's matplotlib plots as PNG; a plot that cannot be drawn (e.g. too few trials for
    importances) is skipped and its reason returned. Importances use PED-ANOVA (no scikit-learn)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    plots = {
        "optimization_history": lambda: ovm.plot_optimization_history(study),
        "param_importances": lambda: ovm.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator()),
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study),
    }
    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, draw in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            atomic_write_bytes(
                folder / f"{name}.png", lambda f, fig=fig: fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
            )
            plt.close(fig)
            result[name] = str(folder / f"{name}.png")
        except Exception as e:
            result[name] = f"skipped: {type(e).__name__}: {e}"
    return result


def run_search(scfg: DictConfig, final: bool | None = None, progress=print) -> dict:
    """One worker: optimize, then (when the study is complete and ``final``) the final step."""
    search = Search(scfg, progress)
    stats = search.optimize()
    out = {"worker": stats}
    final = scfg.final if final is None else final
    if final and search.done():
        with search.lock:  # one worker retrains; the others find its result
            out.update(search.finish())
    elif final:
        progress("study not complete yet (other workers or a rerun will finish it); final step skipped")
    return out
