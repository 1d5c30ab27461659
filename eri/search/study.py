"""An Optuna study over fusion choices: one config file, any number of worker processes.

A search config (``configs/search/*.yaml``, schema ``SearchConfig``) names a base training config
(the paper setting) and a search space over it (`eri.search.space`).

- **Composition** (`eri.config`, as for every config file): a search file's ``base:`` may list other
  search files (composed under it) and the training config searched over: a base whose keys are a
  training config's is not composed but sets ``SearchConfig.base`` to its path (found beside the
  search file, else from the working directory). That is what ``base:`` always meant in a search
  file, so every existing search config and stored study resolves the same trials. The training config
  may itself be an overlay (``base:`` + dotted keys); ``base_overrides`` adds ``key=value`` on top. Each trial turns its sampled
parameters into structured updates of the base config and trains with `eri.training.run.train` in
its own run directory ``<out>/trials/<NNNN>``; the objective is the best epoch's val mean PCC.

- **Paper trial first**: the base config read back into the space's parameters is trial 0, so the
  study's best is never below the paper setting.
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

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from eri.config import Config, ConfigError, load_config, load_structured, rule, to_yaml
from eri.io import atomic_write_bytes, atomic_write_text, inside, mask_secrets
from eri.progress import Units
from eri.search.space import SPACE_KEYS, Space
from eri.search.storage import StudyLock, make_storage, quiet_experimental, slots_used, storage_error

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
    base: str = "configs/demo.yaml"  # the training config (paper setting): trial 0, what every trial overrides
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
    space: dict = field(default_factory=dict)  # see eri.search.space.SPACE_KEYS
    final: bool = True  # retrain the best trial and score it on test when the study is done
    final_overrides: list = field(default_factory=list)  # key=value for that retrain (e.g. more epochs)


def load_search_config(path: str | Path, overrides: list[str] = ()) -> DictConfig:
    """Schema <- YAML <- ``key=value``; unknown keys (also inside ``space``) are errors listing the valid ones."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"search config {path} not found")
    cfg = load_structured(SearchConfig, path, overrides, other_base=(Config, "base"))
    unknown = sorted(set(cfg.space) - set(SPACE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} in space; valid keys: {list(SPACE_KEYS)}")
    cfg.out = cfg.out or f"runs/search/{path.stem}"
    cfg.study_name = cfg.study_name or path.stem
    cfg.storage = cfg.storage or f"sqlite:///{Path(cfg.out).resolve() / 'study.db'}"
    return cfg


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
            with self.lock, warnings.catch_warnings():  # workers starting together would race to create Optuna's tables
                warnings.filterwarnings("ignore", message=".*heartbeat_interval.* is an experimental feature")  # Optuna's own
                self.storage = make_storage(scfg.storage, scfg.heartbeat_s, scfg.max_retry)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - an unreachable server, a bad URL or password: say which, masked
            raise storage_error(scfg.storage, e) from None
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
        from eri.training.skeleton import return_freed_memory

        self._current = trial
        self.lock.release()  # the trial is registered: other workers may count and start theirs
        run_dir = str(inside(self.out, "trials", Path(trial.user_attrs.get("run_dir") or f"{trial.number:04d}").name))
        trial.set_user_attr("run_dir", run_dir)  # a retry inherits it and resumes there
        try:
            updates = self.space.updates(self.space.sample(trial))
            trial.set_user_attr("updates", updates)
            cfg = self.space.trial_config(updates, run_dir, ["trainer.progress_bar=false"])
            t = time.perf_counter()
            metrics = train(cfg, callbacks=[pruning_callback(trial)], quiet=True)
            trial.set_user_attr("seconds", round(time.perf_counter() - t, 1))
            if "mean_pcc" in metrics.get("test", {}):
                trial.set_user_attr("test_mean_pcc", metrics["test"]["mean_pcc"])
            return float(metrics["val"]["mean_pcc"])
        except optuna.TrialPruned:
            raise
        except Exception as e:  # recorded with the trial; the study goes on (optimize(catch=...))
            trial.set_user_attr("error", mask_secrets(f"{type(e).__name__}: {e}")[:2000])
            raise
        finally:
            return_freed_memory()  # a worker runs trial after trial: each starts from the same memory

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
            with quiet_experimental():
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
        units = Units(self.cfg.n_trials, self.progress)  # one [k/N] line per trial: k counts every worker's
        while self.cfg.timeout is None or time.perf_counter() - start < self.cfg.timeout:
            self.lock.acquire()
            try:
                with quiet_experimental():
                    optuna.storages.fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                if slots_used(trials) >= self.cfg.n_trials and not any(t.state == TrialState.WAITING for t in trials):
                    break
                study = self._study(self.cfg.sampler.seed + len(trials))
                self._current = None
                units.start()
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
                trials = study.get_trials(deepcopy=False)
                what, result = _describe(next(t for t in trials if t.number == number))
                units.done(what, result, k=sum(t.state.is_finished() for t in trials))
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
            self.space.updates(best.params), self.out / "best", [*self.cfg.final_overrides, "trainer.progress_bar=true"]
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
                self.progress(f"retraining the best trial ({best.number}) into {self.out / 'best'}")
                metrics = train(wanted, quiet=True)
            summary["retrain"] = {s: metrics[s]["mean_pcc"] for s in ("val", "test") if "mean_pcc" in metrics.get(s, {})}
        atomic_write_text(self.out / "trials.csv", study.trials_dataframe().to_csv(index=False))
        summary["plots"] = save_plots(study, self.out / "plots")
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2, default=str))
        return summary


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


def _describe(t) -> tuple[str, str]:
    """(which trial, how it ended) for its progress line."""
    val = f" val {t.value:.4f}" if t.value is not None else ""
    extra = f" ({t.user_attrs['error']})" if "error" in t.user_attrs else ""
    return f"trial {t.number}" + (" (the paper setting)" if t.user_attrs.get("paper") else ""), f"{t.state.name.lower()}{val}{extra}"


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


def summary_table(result: dict) -> str:
    """One table of what `run_search` returned (what tools/search.py prints; summary.json keeps it all)."""
    from tabulate import tabulate

    def pcc(x) -> str:
        return "-" if x is None else f"{x:.4f}"

    w = result["worker"]
    rows = [["this worker", f"{w['trials_run']} trial(s) in {w['seconds']} s"
             + (f" ({w['trials_per_hour']} per hour)" if w["trials_per_hour"] else "")]]
    if "best_trial" in result:
        rows += [
            ["trials", ", ".join(f"{n} {k.lower()}" for k, n in result["states"].items())],
            ["paper setting (val)", f"trial {result['paper_trial']}: {pcc(result['paper_val_mean_pcc'])}"],
            ["best (val)", f"trial {result['best_trial']}: {pcc(result['best_val_mean_pcc'])}"],
            *[[f"  {k}", f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in result["best_params"].items()],
        ]
        if "retrain" in result:
            rows.append(["best, retrained", ", ".join(f"{s} {pcc(v)}" for s, v in result["retrain"].items())])
    return tabulate(rows, tablefmt="plain", disable_numparse=True)


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
