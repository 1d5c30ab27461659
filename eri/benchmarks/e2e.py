"""End-to-end throughput (``eri benchmark e2e``, issue 21 item 5): videos/s, peak memory and FLOPs of the
paper 000 joint model (encoder ``mma_rnn``, `eri.models.e2e`) on the CPU or a GPU (``device="cuda"``: the
Trainer on the GPU, the CNN under the encoder's own bf16 autocast in channels_last, as training runs it),
and what one H200 would need for Hume-Reaction.

The model is built as training builds it: `configs/mma_mrnnet_e2e.yaml` at a size preset, `create_model`,
the `ERITask` (its optimiser groups: the MMA net at lr x backbone_lr_scale; routing), trained by a
Lightning `Trainer` from `eri.training.skeleton.build_trainer` on random uint8-valued crops (B, T, S*S*3).
Memory modes (the encoder's knobs): ``all`` (every frame with gradients), ``frames`` / ``frames=K``
(``train_frames``: K random frames per video with gradients, the rest without), ``checkpoint``
(``checkpoint_frames``: every frame, the CNN recomputed in backward) and ``score`` (no grad, every frame).

Each mode runs in a fresh process (`eri.benchmarks.scale.run_measured`: its own peak RSS, from wait4 through
a bare launcher), so memory is per mode; ``rss_growth_mb`` is the peak over the process's state just before the first step
(model and inputs built). FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (a multiply-add
is 2 FLOPs, as GPU peaks count them) during the untimed warm-up step, and per frame through the MMA net
on a few probe frames (with and without gradients), which also gives the bytes autograd saves per frame:
the estimate that skips a mode over ``max_gb`` before it runs, and the H200 memory check. On a GPU the
memory columns are the GPU's: peak allocated bytes (`torch.cuda.max_memory_allocated`) over those held
before the first step, and steps are timed after `torch.cuda.synchronize`.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from eri.errors import InputError

CONFIG = "configs/mma_mrnnet_e2e.yaml"
CROP = {"tiny": 64, "paper": 112}  # 64: configs/extract/crops.yaml's size; 112: the paper preset's crop_size
H200_TFLOPS = 989.0  # dense bf16 peak of an H200 SXM (NVIDIA's datasheet; 1,979 is with sparsity)
H200_GB = 141.0
HUME = {"train": 15806, "val": 4657, "test": 4604, "frames": 249}  # DESIGN.md: videos per split, mean frames per video
MODES = ("all", "frames", "checkpoint", "score")
CHILD = ("import json, sys; from eri.benchmarks.e2e import measure; "
         "print('E2E_ROW ' + json.dumps(measure(**json.loads(sys.argv[1]))))")


def mode_overrides(mode: str) -> list[str]:
    """The encoder keys a memory mode sets (``frames`` keeps the config's ``train_frames``)."""
    key = "model.branches.0.encoder"
    if mode in ("all", "score"):
        return [f"{key}.train_frames=0", f"{key}.checkpoint_frames=false"]
    if mode == "checkpoint":
        return [f"{key}.train_frames=0", f"{key}.checkpoint_frames=true"]
    if mode == "frames":
        return [f"{key}.checkpoint_frames=false"]
    k = mode.removeprefix("frames=")
    if mode.startswith("frames=") and k.isdigit() and int(k) > 0:
        return [f"{key}.train_frames={k}", f"{key}.checkpoint_frames=false"]
    raise InputError(f"e2e benchmark: unknown mode {mode!r}; modes: all, frames, frames=K (K > 0), checkpoint, score")


def build(size: str, mode: str, side: int, device: str = "cpu"):
    """(config, ERITask, its mma_rnn encoder, stream name) as `eri.training.run.build_task` builds them."""
    from omegaconf import OmegaConf

    from eri.config import load_config, streams_of
    from eri.models import create_model
    from eri.training.task import ERITask

    accelerator = "gpu" if device == "cuda" else "cpu"
    cfg = load_config(CONFIG, [f"model.preset={size}", f"trainer.accelerator={accelerator}", "trainer.devices=1",
                               "trainer.progress_bar=false", *mode_overrides(mode)])
    stream = streams_of(cfg)[0]
    model = create_model(OmegaConf.to_container(cfg.model.branches, resolve=True),
                         OmegaConf.to_container(cfg.model.fusion, resolve=True), {stream: side * side * 3})
    task = ERITask(model, OmegaConf.to_container(cfg.loss), OmegaConf.to_container(cfg.optim))
    encoder = next(m for m in model.modules() if hasattr(m, "param_group"))
    return cfg, task, encoder, stream


def frame_costs(encoder, side: int, n: int = 2) -> dict:
    """Per frame through the MMA net (this mode's path, checkpoint recompute included): FLOPs with gradients
    (forward + backward) and without, and the bytes autograd saves for backward without checkpointing
    (parameters excluded: what activation memory grows by per frame with gradients)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randint(0, 256, (n, side * side * 3), generator=torch.Generator().manual_seed(0)).float()
    with FlopCounterMode(display=False) as fc:
        encoder._run(x, True).sum().backward()
    grad = fc.get_total_flops() / n
    with FlopCounterMode(display=False) as fc:
        encoder._run(x, False)
    params = {p.untyped_storage().data_ptr() for p in encoder.parameters()}
    saved = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    was, encoder.checkpoint_frames = encoder.checkpoint_frames, False
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = encoder._run(x, True)
    encoder.checkpoint_frames = was
    del out
    encoder.zero_grad(set_to_none=True)
    return {"grad_flops": grad, "nograd_flops": fc.get_total_flops() / n, "saved_bytes": sum(saved.values()) / n}


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


def _peak_reset() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ``clear_refs`` 5); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _available() -> float:
    """Bytes of memory available to a new allocation (MemAvailable; infinite where unknown)."""
    try:
        line = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemAvailable"))
        return float(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return float("inf")


def _peak_rss() -> float:
    """Bytes: VmHWM (the mark `_peak_reset` resets), else ru_maxrss."""
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
        return float(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def _train(cfg, task, encoder, batch: dict, steps: int) -> dict:
    """1 + ``steps`` Lightning training steps on the same batch; FLOPs counted in the first (untimed)."""
    import tempfile
    import warnings

    import torch
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader
    from torch.utils.flop_counter import FlopCounterMode

    from eri.training.skeleton import build_trainer

    seen = {"t": [], "cpu": [], "grad_frames": [], "flops": 0.0}

    class Steps(Callback):
        def on_train_batch_start(self, trainer, module, b, idx):
            if idx == 0:
                self.fc = FlopCounterMode(display=False)
                self.fc.__enter__()

        def on_train_batch_end(self, trainer, module, out, b, idx):
            if idx == 0:
                self.fc.__exit__(None, None, None)
                seen["flops"] = self.fc.get_total_flops()
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the step's kernels have finished
            seen["t"].append(time.perf_counter())
            seen["cpu"].append(time.process_time())
            seen["grad_frames"].append(encoder.grad_frames)

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`")  # none here: scoring is mode `score`
        trainer = build_trainer(cfg, Path(tmp), [Steps()], logger=False, max_steps=1 + steps,
                                enable_checkpointing=False, limit_val_batches=0, default_root_dir=tmp)
        trainer.fit(task, train_dataloaders=DataLoader([batch] * (1 + steps), batch_size=None))
    return {"seconds": seen["t"][-1] - seen["t"][0], "cpu_seconds": seen["cpu"][-1] - seen["cpu"][0],
            "flops": seen["flops"], "grad_frames": seen["grad_frames"][-1]}


def _score(task, batch: dict, steps: int, device: str = "cpu") -> dict:
    """One counted pass, then ``steps`` timed passes, as validation runs (eval, inference mode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    task.eval().to(device)
    batch = {k: ({s: v.to(device) for s, v in x.items()} if isinstance(x, dict) else x.to(device))
             for k, x in batch.items()}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            task(batch)
        sync()
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            task(batch)
        sync()
    return {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - cpu, "flops": fc.get_total_flops(),
            "grad_frames": 0}


def measure(size: str, mode: str, batch: int, length: int, frames: int, steps: int, threads: int, side: int,
            max_gb: float, device: str = "cpu") -> dict:
    """One (size, mode) row, in this process (`e2e_benchmark` runs it in a fresh one)."""
    import torch

    from eri.training.skeleton import configure_cpu

    gpu = device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise InputError("e2e benchmark: --device cuda, but torch sees no CUDA GPU on this machine")
    torch.set_num_threads(threads)
    cfg, task, enc, stream = build(size, mode, side, device)
    configure_cpu(cfg)
    torch.manual_seed(cfg.seed)
    frames = min(frames, length, enc.max_len)  # the frames the RNN keeps (longer videos are subsampled to L)
    costs = frame_costs(enc, side)
    grad_frames = 0 if mode == "score" else min(enc.train_frames or frames, frames)
    est = batch * grad_frames * costs["saved_bytes"]
    if enc.checkpoint_frames:  # one chunk's activations at a time, plus every chunk's input pixels
        est = min(enc.chunk, batch * frames) * costs["saved_bytes"] + batch * frames * side * side * 3 * 4
    row = {"device": torch.cuda.get_device_name() if gpu else "cpu", "size": size, "mode": mode, "batch": batch,
           "length": length, "frames": frames, "crop": side, "train_frames": enc.train_frames,
           "checkpoint_frames": enc.checkpoint_frames, "steps": steps, "threads": threads,
           "grad_frames_per_video": grad_frames,
           "est_activation_mb": round(est / 2**20, 1),
           "saved_mb_per_grad_frame": round(costs["saved_bytes"] / 2**20, 3),
           "gflops_per_grad_frame": _sig(costs["grad_flops"] / 1e9),
           "gflops_per_frame_nograd": _sig(costs["nograd_flops"] / 1e9)}
    free = torch.cuda.mem_get_info()[0] if gpu else _available()
    if est > max_gb * 2**30 or est > 0.8 * free:  # never push a shared machine into swap or the OOM killer
        return {**row, "note": f"skipped: estimated activation memory {est / 2**30:.1f} GB > --max-gb {max_gb:g} "
                               f"or 80% of the {free / 2**30:.1f} GB available"}
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randint(0, 256, (batch, length, side * side * 3), generator=g, dtype=torch.uint8).float()
    x[:, frames:] = 0
    b = {"x": {stream: x}, "lengths": {stream: torch.full((batch,), frames)}, "y": torch.rand(batch, 7, generator=g),
         "index": torch.arange(batch)}
    if gpu:  # the GPU's own peak over what it held before the first step
        task.to(device)
        torch.cuda.reset_peak_memory_stats()
        exact, before = True, torch.cuda.memory_allocated()
    else:
        exact = _peak_reset()  # growth over the state just before the first step (model and inputs built)
        before = _peak_rss()
    res = _score(task, b, steps, device) if mode == "score" else _train(cfg, task, enc, b, steps)
    growth = (torch.cuda.max_memory_allocated() if gpu else _peak_rss()) - before
    speed = batch * steps / res["seconds"]
    return {**row, "grad_frames_per_video": res["grad_frames"] // batch,
            "train_videos_per_s": None if mode == "score" else round(speed, 3),
            "score_videos_per_s": round(speed, 3) if mode == "score" else None,
            "videos_per_cpu_s": round(batch * steps / res["cpu_seconds"], 3),
            ("gpu_growth_mb" if gpu else "rss_growth_mb"): round(growth / 2**20),
            "gflops_per_video": _sig(res["flops"] / batch / 1e9),
            "note": "" if exact else "peak mark not resettable: rss growth is over the earlier peak"}


def e2e_benchmark(sizes=("tiny", "paper"), modes=MODES, steps: int = 2, threads: int = 1, max_gb: float = 16.0,
                  batch: int | None = None, length: int | None = None, frames: int | None = None,
                  crop: int | None = None, progress=print, device: str = "cpu") -> list[dict]:
    """Every (size, mode), each in a fresh process; batch, length and crop default to the config's
    ``data.batch_size``, the preset's ``max_len`` and `CROP`; every video has ``frames`` valid frames (default: all)."""
    from eri.benchmarks.scale import run_measured
    from eri.config import load_config

    for m in modes:
        mode_overrides(m)  # a bad mode fails before anything runs
    rows = []
    for size in sizes:
        if size not in CROP and crop is None:
            raise InputError(f"e2e benchmark: size {size!r} needs --crop (known sizes: {', '.join(CROP)})")
        cfg = load_config(CONFIG, [f"model.preset={size}"])
        b, n = batch or cfg.data.batch_size, length or cfg.model.branches[0].encoder.max_len
        for mode in modes:
            kw = dict(size=size, mode=mode, batch=b, length=n, frames=frames or n, steps=steps, threads=threads,
                      side=crop or CROP[size], max_gb=max_gb, device=device)
            env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            res = run_measured([sys.executable, "-c", CHILD, json.dumps(kw)], env)
            found = [ln for ln in res["output"].splitlines() if ln.startswith("E2E_ROW ")]
            if res["code"] != 0 or not found:
                tail = (res["output"].strip().splitlines() or ["no output"])[-1][:200]
                row = {"size": size, "mode": mode, "note": f"failed (exit {res['code']}): {tail}"}
            else:
                row = json.loads(found[-1][len("E2E_ROW "):])
                row["peak_rss_mb"] = round(res["peak_rss_mb"])
            row["max_epochs"] = int(cfg.trainer.max_epochs)
            rows.append(row)
            if progress:
                speed = row.get("train_videos_per_s") or row.get("score_videos_per_s")
                progress(f"  {size:<6} {mode:<11} {speed if speed is not None else '-':>8} videos/s  "
                         f"memory +{row.get('gpu_growth_mb', row.get('rss_growth_mb', '-'))} MB  "
                         f"{row.get('gflops_per_video', '-')} GFLOP/video  "
                         f"{row.get('note', '')}")
    return rows


def hume_flops(row: dict, n: int | None = None) -> float | None:
    """FLOPs per Hume-Reaction video of ``n`` frames in this row's mode: the counted per-video FLOPs with
    the MMA net's share re-counted at ``n`` frames (per-frame counts of the probe); the rest (RNN, head,
    loss, at the padded length) as counted."""
    if row.get("gflops_per_video") is None:
        return None
    n = HUME["frames"] if n is None else n
    g, h = row["gflops_per_grad_frame"], row["gflops_per_frame_nograd"]
    k = 0 if row["mode"] == "score" else min(row["train_frames"] or row["frames"], row["frames"])
    rest = row["gflops_per_video"] - (k * g + (row["frames"] - k) * h)
    return 1e9 * (min(k, n) * g + (n - min(k, n)) * h + rest)


def h200_estimate(rows: list[dict], utilisation: float = 0.3) -> list[dict]:
    """Hours on one H200 per training mode: an epoch (train split trained, val split scored) and the
    config's max_epochs plus scoring the test split, at ``utilisation`` x the dense bf16 peak (an assumption)."""
    rate = H200_TFLOPS * 1e12 * utilisation
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        here = [r for r in rows if r["size"] == size]
        scored = [hume_flops(r) for r in here if r["mode"] == "score" and hume_flops(r)]
        score = scored[0] if scored else None
        for r in here:
            train = hume_flops(r)
            if r["mode"] == "score" or train is None or score is None:
                continue
            epoch = (HUME["train"] * train + HUME["val"] * score) / rate / 3600
            flops = HUME["train"] * train + HUME["val"] * score
            total = r["max_epochs"] * epoch + HUME["test"] * score / rate / 3600
            out.append({"size": size, "mode": r["mode"], "tflop_per_epoch": round(flops / 1e12),
                        "h200_hours_per_epoch": _sig(epoch), f"h200_hours_{r['max_epochs']}_epochs": _sig(total),
                        "crop_frames_per_s": round(HUME["frames"] * rate / train)})
    return out


def measured_hours(rows: list[dict]) -> list[dict]:
    """Hours per Hume-Reaction epoch from the measured videos/s (GPU rows): each training mode's rate on the
    train split and the score mode's on val, each time scaled from the benchmark's L frames to Hume's mean
    by the FLOP ratio (`hume_flops`; per-step overheads do not shrink with it, so this is a lower bound)."""
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        here = [r for r in rows if r["size"] == size and r.get("gflops_per_video")]
        score = next((r for r in here if r["mode"] == "score" and r.get("score_videos_per_s")), None)
        for r in here:
            if r["mode"] == "score" or not r.get("train_videos_per_s") or score is None:
                continue
            per = {k: hume_flops(x) / (x["gflops_per_video"] * 1e9) / x[f"{k}_videos_per_s"]
                   for k, x in (("train", r), ("score", score))}  # seconds per Hume video
            epoch = HUME["train"] * per["train"] + HUME["val"] * per["score"]
            out.append({"device": r.get("device"), "size": size, "mode": r["mode"],
                        "measured_hours_per_epoch": _sig(epoch / 3600),
                        f"measured_hours_{r['max_epochs']}_epochs": _sig((r["max_epochs"] * epoch
                                                                          + HUME["test"] * per["score"]) / 3600)})
    return out


def h200_memory(rows: list[dict]) -> list[str]:
    """Whether every frame with gradients at the row's batch and L fits an H200 (bytes autograd saved per frame)."""
    lines = []
    for r in rows:
        if r["mode"] == "all" and r.get("saved_mb_per_grad_frame") is not None:
            gb = r["batch"] * r["length"] * r["saved_mb_per_grad_frame"] / 1024
            lines.append(f"{r['size']}: every frame with gradients, batch {r['batch']} x L {r['length']}: {gb:.1f} GB "
                         f"of saved activations in fp32 (about half under bf16 autocast) vs {H200_GB:g} GB: "
                         f"{'fits' if gb < H200_GB else 'does not fit'}")
    return lines


TABLE = ["size", "mode", "batch", "length", "crop", "grad_frames_per_video", "train_videos_per_s", "score_videos_per_s",
         "videos_per_cpu_s",
         "rss_growth_mb", "gpu_growth_mb", "peak_rss_mb", "est_activation_mb", "gflops_per_video", "note"]


def report(rows: list[dict], utilisation: float, threads: int, steps: int, device: str = "cpu") -> str:
    """The printed table, the H200 estimate and what the numbers are (and are not)."""
    import pandas as pd

    gpu = device == "cuda"
    df = pd.DataFrame(rows).reindex(columns=["device", *TABLE]).dropna(axis=1, how="all")
    h200 = pd.DataFrame(h200_estimate(rows, utilisation))
    where = (f"GPU ({next((r['device'] for r in rows if r.get('device')), 'cuda')}), the CNN under bf16 autocast in "
             "channels_last; gpu_growth_mb: peak GPU memory allocated over what was held before the first step"
             if gpu else f"CPU, {threads} thread(s)")
    lines = [f"{where}; a short run: 1 warm-up step (FLOPs counted) + {steps} timed step(s) per mode, "
             "each mode in a fresh process; videos_per_cpu_s: per second of this process's CPU time (robust to other "
             "jobs sharing the cores when threads = 1); peak RSS on the CPU is only a proxy for accelerator memory.",
             "", df.to_markdown(index=False, floatfmt=".4g"), "",
             f"One H200: {H200_TFLOPS:g} TFLOP/s dense bf16 peak x utilisation {utilisation:g} "
             "(an assumption, --utilisation); "
             f"Hume-Reaction {HUME['train']:,} train / {HUME['val']:,} val / {HUME['test']:,} test videos of "
             f"{HUME['frames']} frames on average (DESIGN.md); an epoch trains on train and scores val; the total adds "
             "scoring test once. crop_frames_per_s: the face crops the GPU would consume while training."]
    lines += (["", h200.to_markdown(index=False, floatfmt=".4g")] if len(h200)
              else ["(no H200 estimate: it needs a training mode and the score mode of the same size)"])
    measured = pd.DataFrame(measured_hours(rows)) if gpu else pd.DataFrame()
    if len(measured):
        lines += ["", "Measured on this GPU (rates above, scaled to Hume-Reaction's mean frames by FLOPs; data "
                      "loading not included):", "", measured.to_markdown(index=False, floatfmt=".4g")]
    return "\n".join([*lines, "", *h200_memory(rows)])


def batchnorm_shift(root, mma_checkpoint, videos: int = 16, chunk: int = 128, stream: str = "crops") -> dict:
    """How far BatchNorm's training mode moves a checkpoint's per-frame outputs (``eri benchmark
    e2e-batchnorm``; why encoder ``mma_rnn`` has ``batchnorm``): the first ``videos`` videos of the crops
    stream under ``root`` as one batch, run through the MMA net as the encoder runs its frames without
    gradients (chunks of ``chunk`` frames), in eval mode (the checkpoint's running statistics: what regime 1
    extracts) and in training mode (each chunk's statistics: ``batchnorm: batch``). Returns the mean
    |train - eval| over the eval outputs' standard deviation (averaged over the 26 outputs), the median
    per-output correlation of the two, and the same correlation of per-video means."""
    import numpy as np
    import torch

    from eri.data.crops import read_crops
    from eri.data.store import FeatureStore
    from eri.models.e2e import MMARNN
    from eri.models.mma import read_mma_checkpoint

    store = FeatureStore(root)
    ids = store.index(stream)["File_ID"].astype(str).tolist()[:videos]
    clips = [read_crops(store, stream, v) for v in ids]
    clips = [p[ok] for p, ok, _ in clips if ok.any()]
    if not clips:
        raise InputError(f"{root}: stream {stream} has no frames with a face in its first {videos} videos")
    side = clips[0].shape[1]
    x = torch.zeros(len(clips), max(map(len, clips)), side * side * 3)
    for i, p in enumerate(clips):
        x[i, : len(p)] = torch.from_numpy(p.reshape(len(p), -1)).float()
    lengths = torch.tensor([len(p) for p in clips])
    enc = MMARNN(side * side * 3, mma=read_mma_checkpoint(mma_checkpoint)[0], chunk=chunk, mma_checkpoint=str(mma_checkpoint), max_len=x.shape[1])
    with torch.no_grad():
        a = enc.eval().frame_features(x, lengths)
        b = enc.train().frame_features(x, lengths)
    valid = torch.arange(x.shape[1])[None] < lengths[:, None]
    fa, fb = a[valid].numpy(), b[valid].numpy()
    corr = lambda u, v: float(np.median([np.corrcoef(u[:, k], v[:, k])[0, 1] for k in range(u.shape[1])]))
    ma = np.stack([a[i, :n].numpy().mean(0) for i, n in enumerate(lengths)])
    mb = np.stack([b[i, :n].numpy().mean(0) for i, n in enumerate(lengths)])
    return {"videos": len(clips), "frames": int(valid.sum()), "shift_sd": float((np.abs(fa - fb).mean(0) / fa.std(0)).mean()),
            "frame_corr": corr(fa, fb), "video_mean_corr": corr(ma, mb)}
