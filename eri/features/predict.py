"""Predictions for new videos from a trained run: extract what its streams need, predict, plot.

1. The run (a run directory or one of its ``.ckpt`` files) gives the model config and weights. The
   extractor configs come from the training data's store (``<data.root>/features/<stream>/meta.json``,
   or a copy in ``<run>/streams/<stream>.json``), so a new video is processed exactly like the
   training videos: same extractor, config, faces and decode settings. Streams made by the synthetic
   generator have no extractor: predicting with such a run is an error that says so.
2. The videos are extracted into ``<out>/store`` (the normal pipeline: skip / stale / report apply),
   then read the way training reads them (``frame_stride``, frames without a face dropped, column
   slices) and predicted in one padded batch.
3. ``predictions.csv``: ``video``, ``File_ID``, the 7 intensities, ``n_valid_frames`` per face stream,
   ``note``. As in training, a video with fewer than ``data.min_valid_frames`` valid frames in a
   per-frame stream, or no step in another stream, gets the mean training label (when the training
   labels are readable; else NaN) and a note saying why.
4. One figure per video (``<id>.png``): the per-frame signals of each stream (z-scored, the most
   varying columns; expression probabilities as lines), the regression token's attention over time in
   each branch with a ``gru_transformer`` encoder (paper 004, Fig. 2), and the 7 predicted intensities.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from eri.constants import EMOTIONS
from eri.data.dataset import parse_stream
from eri.data.store import FeatureStore
from eri.errors import InputError
from eri.io import atomic_write_bytes, atomic_write_text, load_torch


class PredictError(InputError):
    pass


def resolve_run(checkpoint: str | Path) -> tuple[Path, Path]:
    """``(run_dir, ckpt)`` from a run directory (its best checkpoint) or a checkpoint file inside one."""
    p = Path(checkpoint)
    if p.is_dir():
        run = p
        from eri.training.run import best_checkpoint

        ckpt = best_checkpoint(run) if (run / "metrics.json").exists() else None
        if ckpt is None:
            best = sorted((run / "checkpoints").glob("best-*.ckpt"))
            ckpt = best[-1] if best else run / "checkpoints" / "last.ckpt"
    elif p.is_file():
        ckpt, run = p, p.parent.parent if p.parent.name == "checkpoints" else p.parent
    else:
        raise PredictError(f"{p}: no such run directory or checkpoint file")
    if not ckpt.exists():
        raise PredictError(
            f"{run}: no checkpoint found (looked for metrics.json's best, checkpoints/best-*.ckpt, last.ckpt)"
        )
    if not (run / "config.yaml").exists():
        raise PredictError(f"{run}/config.yaml not found: a checkpoint must sit in its run directory (checkpoints/)")
    return run, ckpt


def stream_metas(run: Path, cfg) -> dict[str, dict]:
    from eri.config import streams_of

    metas = {}
    for spec in streams_of(cfg):
        name, _ = parse_stream(spec)
        candidates = [run / "streams" / f"{name}.json", Path(cfg.data.root) / "features" / name / "meta.json"]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise PredictError(
                f"stream '{name}': its extraction settings were not found (looked in "
                f"{', '.join(map(str, candidates))}); predict needs the training data's store"
            )
        metas[name] = json.loads(found.read_text())
    return metas


def extraction_config(metas: dict[str, dict], device: str = "cpu"):
    """The extraction config that reproduces the training streams (face/decode settings must agree)."""
    from eri.features.pipeline import ExtractConfig

    cfg = OmegaConf.structured(ExtractConfig)
    faces = decode = None
    extractors = []
    for stream, m in metas.items():
        if m.get("extractor") in (None, "synthetic", "muse2022"):
            raise PredictError(
                f"stream '{stream}' was not made by an extractor (extractor: {m.get('extractor')!r}): a "
                "run trained on synthetic or organiser features cannot process new videos"
            )
        if "faces" in m:
            if faces is not None and (m["faces"] != faces or m["decode"] != decode):
                raise PredictError(
                    f"stream '{stream}' was extracted with other face/decode settings than another stream"
                )
            faces, decode = m["faces"], m["decode"]
        conf = {k: v for k, v in m.get("config", {}).items() if k != "device"}  # this machine's device applies
        extractors.append(
            {"name": m["extractor"], "stream": stream, "dtype": m.get("dtype", "float32"), "config": conf}
        )
    update = {"extractors": extractors, "device": device, "layout": "folder"}
    if faces:
        update.update(faces=faces, decode=decode)
    cfg = OmegaConf.merge(cfg, update)
    return cfg


def load_model(run: Path, ckpt: Path, cfg, metas: dict[str, dict]):
    """The trained ERIModel (weights and standardisation buffers from the checkpoint)."""
    from eri.config import streams_of
    from eri.models import create_model

    dims = {}
    for spec in streams_of(cfg):
        name, cols = parse_stream(spec)
        dims[spec] = len(range(int(metas[name]["dim"]))[cols])
    stats = None  # placeholders of the right shapes: the checkpoint holds the real statistics
    if cfg.data.standardize:
        stats = {s: (np.zeros(d, np.float32), np.ones(d, np.float32)) for s, d in dims.items()}
    model = create_model(
        OmegaConf.to_container(cfg.model.branches, resolve=True),
        OmegaConf.to_container(cfg.model.fusion, resolve=True),
        dims,
        stats,
    )
    state = load_torch(ckpt, "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise PredictError(f"checkpoint {ckpt} holds no state_dict")
    try:
        model.load_state_dict({k[len("model.") :]: v for k, v in state["state_dict"].items() if k.startswith("model.")})
    except RuntimeError as e:
        raise PredictError(f"checkpoint {ckpt} does not fit its run's config ({str(e)[:300]})") from None
    return model.eval()


def _train_mean(cfg) -> np.ndarray | None:
    from eri.data.labels import read_manifest

    try:
        m = read_manifest(cfg.data.root, cfg.data.layout)
    except Exception:  # noqa: BLE001 - labels not available at prediction time: NaN for invalid videos
        return None
    train = m[m["split"] == "train"][list(EMOTIONS)].dropna()
    return train.to_numpy(np.float64).mean(0) if len(train) else None


def prepare(store: FeatureStore, ids: list[str], cfg, metas: dict[str, dict]):
    """Per video: the steps fed to the model and their timestamps, by the same rule as training."""
    from eri.config import streams_of
    from eri.data.dataset import InputPolicy, read_video

    d = cfg.data
    policy = InputPolicy(d.drop_invalid_frames, d.min_valid_frames, d.frame_stride)
    per_frame = {name: m.get("rate") == "frame" for name, m in metas.items()}
    out, notes, n_valid = [], [], []
    for vid in ids:
        v = read_video(store, vid, streams_of(cfg), per_frame, policy)
        out.append(({s: torch.from_numpy(a) for s, a in v.x.items()}, v.times))
        notes.append("; ".join(v.problems))
        n_valid.append(v.n_valid)
    return out, notes, n_valid


@torch.no_grad()
def run_model(model, items: list[dict]) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """One padded batch -> predictions (B, 7) and, per gru_transformer branch, each video's token attention."""
    from torch.nn.utils.rnn import pad_sequence

    specs = items[0].keys()
    x = {s: pad_sequence([it[s] for it in items], batch_first=True).float() for s in specs}
    lengths = {s: torch.tensor([len(it[s]) for it in items]) for s in specs}
    safe = {s: lengths[s].clamp(min=1) for s in specs}  # empty videos are replaced by the policy afterwards
    for s in specs:
        if x[s].shape[1] == 0:
            x[s] = x[s].new_zeros(len(items), 1, x[s].shape[2])
    pred = model(x, safe).numpy().astype(np.float64)
    attn = {}
    for name, branch in model.branches.items():
        if hasattr(branch.encoder, "token_attention"):
            feats, lens = branch.inputs(x, safe)
            a = branch.encoder.token_attention(feats, lens).numpy()
            attn[name] = [a[i, : int(lengths[branch.streams[0]][i])] for i in range(len(items))]
    return pred, attn


def plot_video(
    path: Path, vid: str, feats: dict, times: dict, attn: dict, branch_streams: dict, pred, note: str, metas: dict
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = list(feats)
    rows = len(specs) + len(attn) + 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.9 * rows + 0.6), squeeze=False)
    axes = axes[:, 0]
    t_end = max([float(t[-1]) for t in times.values() if len(t)] + [1.0])
    for ax, spec in zip(axes, specs):
        f, t = feats[spec].numpy(), times[spec]
        name, _ = parse_stream(spec)
        if len(f) == 0:
            ax.text(0.5, 0.5, f"{spec}: no steps", ha="center", va="center", transform=ax.transAxes)
        elif metas[name].get("extractor") == "expression" and f.shape[1] == len(metas[name].get("classes", [])):
            for j, c in enumerate(metas[name]["classes"]):
                ax.plot(t, f[:, j], label=c, lw=1)
            ax.legend(fontsize=6, ncol=7, loc="upper right")
        else:
            top = np.argsort(-f.std(0))[: min(24, f.shape[1])]
            z = (f[:, top] - f[:, top].mean(0)) / (f[:, top].std(0) + 1e-6)
            ax.imshow(
                z.T,
                aspect="auto",
                cmap="coolwarm",
                vmin=-3,
                vmax=3,
                interpolation="nearest",
                extent=(float(t[0]), float(t[-1]) if len(t) > 1 else float(t[0]) + 1e-3, len(top), 0),
            )
        ax.set_xlim(0, t_end)
        ax.set_ylabel(spec, fontsize=8)
    for ax, (branch, a) in zip(axes[len(specs) :], attn.items()):
        t = times[branch_streams[branch][0]]
        if len(a):
            ax.fill_between(t[: len(a)], a, step="mid", alpha=0.6)
        ax.set_xlim(0, t_end)
        ax.set_ylabel(f"attention\n{branch}", fontsize=8)
    axes[-2 if rows > 1 else 0].set_xlabel("time (s)")
    ax = axes[-1]
    ax.bar(range(7), pred, color="tab:orange")
    ax.set_xticks(range(7), EMOTIONS, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("predicted")
    fig.suptitle(f"{vid}" + (f"  ({note})" if note else ""), fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)


def predict(
    checkpoint: str | Path,
    videos: list[str | Path],
    out: str | Path,
    device: str = "cpu",
    figures: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Extract, predict and plot for ``videos``; writes ``<out>/predictions.csv`` and ``<out>/<id>.png``."""
    from eri.config import load_config
    from eri.data.labels import normalise_id
    from eri.features.pipeline import Extraction

    run, ckpt = resolve_run(checkpoint)
    cfg = load_config(run / "config.yaml")
    metas = stream_metas(run, cfg)
    model = load_model(run, ckpt, cfg, metas)  # first: a refused checkpoint costs no extraction
    out = Path(out)
    videos = [Path(v) for v in videos]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        raise PredictError(f"video file(s) not found: {missing}")
    ids = [normalise_id(v.stem) for v in videos]
    if len(set(ids)) != len(ids):
        raise PredictError(f"two videos share a file name stem: {[v.name for v in videos]}")
    media = out / "store" / "videos"
    media.mkdir(parents=True, exist_ok=True)
    for v, vid in zip(videos, ids):  # the store's dataset is a folder of links to the given files
        link = media / f"{vid}{v.suffix.lower()}"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(v.resolve())
    ecfg = extraction_config(metas, device)
    ecfg.videos_dir = "videos"
    job = Extraction(ecfg, out / "store", progress=progress)
    res = job.run()
    store = FeatureStore(out / "store")
    failed = set(res["failed"])
    ok = [vid for vid in ids if vid not in failed]
    mean = _train_mean(cfg)
    rows = []
    items, notes, n_valid = prepare(store, ok, cfg, metas) if ok else ([], [], [])
    pred, attn = run_model(model, [x for x, _ in items]) if items else (np.zeros((0, 7)), {})
    branch_streams = {n: b.streams for n, b in model.branches.items()}
    by_id = {vid: k for k, vid in enumerate(ok)}
    for v, vid in zip(videos, ids):
        row = {"video": str(v), "File_ID": vid}
        if vid not in by_id:
            errs = [r["error"] for r in job.report if r["File_ID"] == vid and r["failed"]]
            row.update({e: np.nan for e in EMOTIONS}, note="extraction failed: " + "; ".join(errs))
            rows.append(row)
            continue
        k = by_id[vid]
        p = pred[k]
        if notes[k]:
            p = mean if mean is not None else np.full(7, np.nan)
            notes[k] += "; predicted with the mean training label" if mean is not None else "; no prediction"
        row.update({e: float(p[j]) for j, e in enumerate(EMOTIONS)}, note=notes[k])
        row.update({f"n_valid_{s}": n for s, n in n_valid[k].items() if metas[s].get("rate") == "frame"})
        rows.append(row)
        if figures:
            x, ts = items[k]
            plot_video(
                out / f"{vid}.png", vid, x, ts, {b: a[k] for b, a in attn.items()}, branch_streams, p, notes[k], metas
            )
    df = pd.DataFrame(rows)
    atomic_write_text(out / "predictions.csv", df.to_csv(index=False))
    return df
