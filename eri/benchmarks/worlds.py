"""Worlds: whether what the demo does well holds beyond one synthetic setting (`eri benchmark worlds`).

`hume-small` is one setting of the generator's knobs. Each world of `eri.data.synthetic.knobs.WORLDS`
changes one hard thing (clip length, event density, nuisances, training-set size, missing faces) and has
its own ceiling. In every world the same rows are trained through the shared run cache
(`eri.training.cache`: a finished run is re-read, never retrained, so workers and reruns share them):

- ``demo``: `configs/demo.yaml` (seed 0), and ``previous demo``: the demo until 2026-12-03 (the
  `004-demo-authors` ablation row; paper 004's choices were promoted into the demo on the worlds' val);
- the four single-stream models (the demo's encoder and head, one stream each); ``best single stream`` is the one
  with the best **val** mean PCC, so its test score is honest;
- ``mean pooling``: the demo with every encoder a masked mean (`mean_pool`);
- ``masked RNN (mma)``: paper 000's `configs/mma_mrnnet.yaml` on the mma stream (batch 16, 12 epochs at
  small size, as in the demo-variants ablation table);
- ``ensemble (N seeds)``: the mean of the demo's test predictions over seeds 0..N-1 (no fitted weights).

Every score is test mean PCC with its 95% bootstrap interval. The paired comparisons (demo - best single
stream, demo - previous demo, ensemble - demo) are paired bootstraps over the same test videos.
``--size tiny`` (tiny split sizes, `tiny` encoders, 1 epoch) is what the tests run; ``small`` is the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STREAMS = ("holistic", "au", "audio", "mma")
SIZE_OVERRIDES = {  # per size: what every row gets (tiny: the test budget)
    "tiny": ["model.preset=tiny", "trainer.max_epochs=1", "data.batch_size=8"],
    "small": [],
}
MMA_OVERRIDES = {"tiny": [], "small": ["data.batch_size=16", "trainer.max_epochs=12"]}


@dataclass
class Job:
    world: str
    row: str  # the model's name in the table
    config: str
    overrides: list
    updates: dict
    tier: int = 0  # training order across worlds: the demo and its candidate first, further seeds last


def _previous_demo() -> dict:
    from eri.search.ablate import PREVIOUS_DEMO

    return dict(PREVIOUS_DEMO)


def jobs(world: str, size: str, data: str, seeds: int) -> list[Job]:
    """Every training run of one world, in a fixed order (the shards split this list)."""
    from omegaconf import OmegaConf

    from eri.config import Config, load_structured
    from eri.data.synthetic.knobs import world_preset

    preset = world_preset(world, size)
    base = [f"data.root={Path(data) / preset}", f"data.synthetic={preset}", "trainer.progress_bar=false",
            *SIZE_OVERRIDES[size]]
    encoder = OmegaConf.to_container(load_structured(Config, "configs/demo.yaml").model.branches[0].encoder)

    def branches(streams: dict, enc: dict) -> dict:
        return {"model.branches": [{"name": b, "streams": s, "encoder": dict(enc)} for b, s in streams.items()]}

    out = [Job(world, f"demo seed {s}", "configs/demo.yaml", [*base, f"seed={s}"], {}, 0 if s == 0 else 5)
           for s in range(seeds)]
    out.append(Job(world, "previous demo", "configs/demo.yaml", base, _previous_demo(), 1))
    out += [Job(world, f"{s} only", "configs/demo.yaml", base, branches({s: [s]}, encoder), 2) for s in STREAMS]
    out.append(Job(world, "mean pooling", "configs/demo.yaml", base,
                   branches({s: [s] for s in STREAMS}, {"name": "mean_pool"}), 3))
    out.append(Job(world, "masked RNN (mma)", "configs/mma_mrnnet.yaml", [*base, *MMA_OVERRIDES[size]], {}, 4))
    return out


def prepare_data(worlds: list[str], size: str, data: str, locks: Path, progress=print) -> None:
    """Generate each world's data before any training, one process at a time (shards share ``data``: a lock
    per world under ``locks``, so the second process waits and then finds the dataset complete)."""
    import fcntl

    from eri.data.synthetic import ensure_synthetic
    from eri.data.synthetic.knobs import world_preset

    locks.mkdir(parents=True, exist_ok=True)
    for world in worlds:
        preset = world_preset(world, size)
        with open(locks / f"{preset}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (Path(data) / preset / "synthetic.json").is_file() and progress:
                progress(f"generating world '{world}' ({preset}) into {Path(data) / preset}")
            ensure_synthetic(Path(data) / preset, preset)


def finished_jobs(todo: list[Job], runs: Path) -> dict[tuple, Path]:
    """``{(world, row): run dir}`` of the jobs already finished in the cache, none trained (``--no-train``)."""
    from eri.config import load_config
    from eri.runs import METRICS
    from eri.training.cache import run_key

    found = {(j.world, j.row): runs / run_key(load_config(j.config, j.overrides, j.updates)) for j in todo}
    return {k: run for k, run in found.items() if (run / METRICS).is_file()}


def train_jobs(todo: list[Job], runs: Path, shard: tuple[int, int] = (0, 1), progress=print) -> dict[tuple, Path]:
    """Train (or re-read) this shard's jobs; ``{(world, row): run dir}`` of the ones it ran."""
    from eri.config import load_config
    from eri.progress import Units
    from eri.training.cache import cached_train

    mine = [j for i, j in enumerate(todo) if i % shard[1] == shard[0]]
    units, done = Units(len(mine), progress), {}
    for job in mine:
        units.start()
        cfg = load_config(job.config, job.overrides, job.updates)
        metrics, trained, run = cached_train(cfg, runs, quiet=True)
        val = metrics.get("val", {}).get("mean_pcc")
        units.done(f"{job.world}: {job.row}", f"val {val:.4f}" if val is not None else "val not scored", trained=trained)
        done[(job.world, job.row)] = run
    return done


def _score(pred: np.ndarray, y: np.ndarray) -> dict:
    from eri.training.metrics import bootstrap_ci, score

    s = score(pred, y)
    lo, hi = bootstrap_ci(pred, y)["mean_pcc"]
    return {"test_mean_pcc": round(s["mean_pcc"], 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4)}


def world_table(world: str, runs: dict[str, Path], seeds: int) -> tuple[list[dict], list[dict]]:
    """The rows and the paired comparisons of one world from its runs (row name -> run dir). A model whose
    runs are not all there (``--no-train``: not trained yet) is left out, and so are its comparisons: the best
    single stream needs all four, the ensemble every seed (and two at least); a world without its demo has no
    rows."""
    from eri.runs import open_run
    from eri.training.metrics import paired_bootstrap

    if "demo seed 0" not in runs:
        return [], []
    opened = {name: open_run(path) for name, path in runs.items()}
    ref = opened["demo seed 0"]
    ids = sorted(ref.predictions("test").index)
    y = ref.labels(ids)
    test = {name: r.predictions("test").loc[ids].to_numpy(np.float64) for name, r in opened.items()}
    val = {name: r.metrics["val"].get("mean_pcc", float("nan")) for name, r in opened.items()}
    ceiling = (ref.metrics.get("ceiling") or {}).get("test")
    models, vals = {}, {}
    for name in ("demo", "previous demo", "best single stream", "mean pooling", "masked RNN (mma)", "ensemble"):
        if name == "best single stream":
            if not all(f"{s} only" in test for s in STREAMS):
                continue
            single = max((f"{s} only" for s in STREAMS), key=lambda n: val[n])  # chosen on val, scored on test
            label, pred, v = f"best single stream ({single.split()[0]})", test[single], val[single]
        elif name == "ensemble":
            if seeds < 2 or not all(f"demo seed {s}" in test for s in range(seeds)):
                continue  # a one-seed ensemble is the demo itself
            label, pred, v = f"ensemble ({seeds} seeds)", np.mean([test[f"demo seed {s}"] for s in range(seeds)], axis=0), None
        else:
            key = "demo seed 0" if name == "demo" else name
            if key not in test:
                continue
            label, pred, v = name, test[key], val[key]
        models[label], vals[label] = pred, v
    rows = []
    for m, p in models.items():  # one bootstrap per model
        scored = _score(p, y)
        rows.append({"world": world, "model": m, **scored, "ceiling": ceiling,
                     "of_ceiling": round(scored["test_mean_pcc"] / ceiling, 3) if ceiling else None,
                     "val_mean_pcc": None if vals[m] is None else round(vals[m], 4)})
    pairs = []
    best = next((m for m in models if m.startswith("best single stream")), None)
    for a, b in (("demo", best), ("demo", "previous demo"), (f"ensemble ({seeds} seeds)", "demo")):
        if a not in models or b not in models:
            continue
        d = paired_bootstrap(models[a], models[b], y)["mean_pcc"]
        pairs.append({"world": world, "a": a, "b": b, "diff": round(d["diff"], 4), "ci_low": round(d["ci"][0], 4),
                      "ci_high": round(d["ci"][1], 4), "p": round(d["p"], 4), "established": d["excludes_0"]})
    return rows, pairs


def _model_key(name: str) -> str:
    """A row's model across worlds: "best single stream (au)" and "(audio)" are one model."""
    return name.split(" (")[0] if name.startswith("best") else name


def markdown(rows: list[dict], pairs: list[dict]) -> str:
    """Models x worlds (test mean PCC [95% CI], share of the ceiling), then the paired differences."""
    worlds = list(dict.fromkeys(r["world"] for r in rows))
    models = list(dict.fromkeys(_model_key(r["model"]) for r in rows))
    cell = {(r["world"], _model_key(r["model"])): r for r in rows}
    ceil = {r["world"]: r["ceiling"] for r in rows}
    out = ["| model | " + " | ".join(worlds) + " |", "| --- |" + " --- |" * len(worlds),
           "| ceiling | " + " | ".join(f"{ceil[w]:.3f}" if ceil[w] else "" for w in worlds) + " |"]
    for m in models:
        cells = []
        for w in worlds:
            r = cell.get((w, m))
            if r is None:
                cells.append("")
                continue
            tag = f" {r['model'][len(m):].strip()}" if r["model"] != m else ""
            share = f", {r['of_ceiling']:.0%}" if r["of_ceiling"] else ""
            cells.append(f"{r['test_mean_pcc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]{share}{tag}")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    out += ["", "| world | A - B | difference | 95% CI | p |", "| --- | --- | --- | --- | --- |"]
    out += [f"| {p['world']} | {p['a']} - {p['b']} | {p['diff']:+.4f}{' *' if p['established'] else ''} | "
            f"[{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] | {p['p']:.3f} |" for p in pairs]
    out.append("\n\\* the interval excludes 0: established; otherwise within the noise.")
    return "\n".join(out) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Score / ceiling per world and model, grouped bars with the interval scaled alike."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(dict.fromkeys(r["world"] for r in rows))
    models = list(dict.fromkeys(_model_key(r["model"]) for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(worlds), 4))
    width = 0.8 / len(models)
    for k, m in enumerate(models):
        xs, ys, err = [], [], []
        for i, w in enumerate(worlds):
            r = next((r for r in rows if r["world"] == w and _model_key(r["model"]) == m), None)
            if r is None or not r["ceiling"]:
                continue
            xs.append(i + (k - (len(models) - 1) / 2) * width)
            ys.append(r["test_mean_pcc"] / r["ceiling"])
            err.append([(r["test_mean_pcc"] - r["ci_low"]) / r["ceiling"], (r["ci_high"] - r["test_mean_pcc"]) / r["ceiling"]])
        ax.bar(xs, ys, width, yerr=np.asarray(err).T if err else None, label=m, capsize=2)
    ax.axhline(0.85, ls="--", lw=0.8, color="gray", label="0.85 of the ceiling")
    ax.set_xticks(range(len(worlds)), worlds, rotation=15)
    ax.set_ylabel("test mean PCC / ceiling")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_worlds(out: str | Path, size: str = "small", only=None, seeds: int = 5, data: str = "data",
               shard: tuple[int, int] = (0, 1), progress=print, train: bool = True) -> dict | None:
    """Train every world's rows (this shard's share) and, unsharded, write ``worlds.csv``,
    ``worlds_paired.csv``, ``worlds.md`` and ``worlds.png`` into ``out``. Returns None for a shard.
    ``train=False``: write the tables from the runs already finished, training none (missing rows left out)."""
    import pandas as pd

    from eri.data.synthetic.knobs import WORLDS
    from eri.errors import ConfigError
    from eri.io import atomic_write_text

    worlds = list(only or WORLDS)
    unknown = [w for w in worlds if w not in WORLDS]
    if unknown or size not in SIZE_OVERRIDES or seeds < 1:
        raise ConfigError(f"unknown world(s) {unknown} or size '{size}' or seeds {seeds} < 1; worlds: {', '.join(WORLDS)}; "
                          f"sizes: {', '.join(SIZE_OVERRIDES)}")
    out = Path(out)
    prepare_data(worlds, size, data, out / "locks", progress)
    todo = sorted((j for w in worlds for j in jobs(w, size, data, seeds)), key=lambda j: j.tier)  # stable: world order kept
    done = train_jobs(todo, out / "runs", shard, progress) if train else finished_jobs(todo, out / "runs")
    if shard[1] > 1:
        return None
    rows, pairs = [], []
    for w in worlds:
        r, p = world_table(w, {row: path for (world, row), path in done.items() if world == w}, seeds)
        rows += r
        pairs += p
    if not rows:  # --no-train before any world's demo finished: nothing to write
        return {"rows": [], "pairs": []}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "worlds.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(out / "worlds_paired.csv", pd.DataFrame(pairs).to_csv(index=False))
    atomic_write_text(out / "worlds.md", markdown(rows, pairs))
    atomic_write_text(out / "worlds.json", json.dumps({"size": size, "seeds": seeds, "worlds": worlds,
                                                       "descriptions": {w: WORLDS[w][0] for w in worlds}}, indent=2))
    plot(rows, out / "worlds.png")
    return {"rows": rows, "pairs": pairs}
