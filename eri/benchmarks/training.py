"""Training throughput and peak memory, batched (padded and masked, as eri trains) against the loop of
paper 004's public code: each video forwarded alone, unpadded, and one optimiser step per batch of
16 (HKUST-NISL/ABAW5 models/eri.py: ``for i in range(len(input))``, then one loss and one step).

Each measurement runs in a fresh process so its peak memory is its own (CPU: peak RSS growth of
that process; GPU: ``torch.cuda.max_memory_allocated``). The model is either paper 004's visual
branch (546-d holistic + AU frames) with one encoder at a size preset and the concat head, or a
training config's whole model (``config=``: every branch, its fusion and head; frame streams get T
steps, audio tokens T x 1.95 / 15 as at 15 frames/s). A training step is forward + L2 loss +
backward + AdamW step. Denormal floats are flushed to 0 as in training unless ``flush_denormal=False``.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

IN_DIM = 546
LOOP_BATCH = 16  # the authors' batch: one optimiser step per 16 videos, each forwarded alone


def benchmark_encoders(size: str = "paper") -> list[str]:
    """Every registered encoder that has the size preset ``size`` (what `train_throughput` measures by default)."""
    from eri.models.presets import ENCODER_PRESETS

    return [name for name, presets in ENCODER_PRESETS.items() if size in presets]


def _modules(encoders) -> list[str]:
    """The modules registering ``encoders`` outside eri.models (a plugin's file), imported again by the
    fresh process that measures them."""
    from eri.models.encoders import ENCODERS

    return sorted({ENCODERS.entry(e).module for e in encoders if e in ENCODERS} - {"eri.models.encoders"})


def bench_model(encoder: str, size: str):
    """Paper 004's visual branch (546-d frames) with ``encoder`` at a size preset, concat head."""
    from eri.models import create_model
    from eri.models.presets import encoder_preset

    return create_model([{"name": "visual", "streams": ["v"], "encoder": encoder_preset(encoder, size)}],
                        {"name": "concat"}, {"v": IN_DIM})


def config_model(config: str):
    """A training config's model, with the stream widths each stream declares (`eri.features.streams.declared_meta`:
    the catalogue's, else its registered extractor's)."""
    from omegaconf import OmegaConf

    from eri.config import load_config, streams_of
    from eri.data.dataset import parse_stream, spec_dim
    from eri.features.streams import declared_meta
    from eri.models import create_model

    cfg = load_config(config)
    dims = {s: spec_dim(s, declared_meta(parse_stream(s)[0])) for s in streams_of(cfg)}
    model = create_model(OmegaConf.to_container(cfg.model.branches), OmegaConf.to_container(cfg.model.fusion), dims)
    return model, dims


def _measure(encoder: str, length: int, mode: str, batch: int, steps: int, loop_videos: int, device: str, precision: str,
             threads: int, size: str = "paper", flush_denormal: bool = True, config: str | None = None,
             modules: tuple = ()) -> dict:
    import importlib

    import torch

    from eri.data.dataset import parse_stream

    for module in modules:  # encoders registered outside eri.models: register them in this process too
        importlib.import_module(module)

    torch.set_flush_denormal(flush_denormal)  # as training does (trainer.flush_denormal)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    model, dims = config_model(config) if config else (bench_model(encoder, size), {"v": IN_DIM})
    model = model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.5)
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(int(0.66 * length), length + 1, (batch,), generator=g)
    x, lengths = {}, {}
    for s, d in dims.items():
        n = frames if parse_stream(s)[0] != "audio" else (frames * 1.95 / 15).round().long().clamp(min=1)
        x[s], lengths[s] = torch.randn(batch, int(n.max()), d, generator=g).to(dev), n.to(dev)
    y = torch.rand(batch, 7, generator=g).to(dev)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step(xb, lb, yb):
        with torch.autocast(**amp):
            pred = model(xb, lb)
        loss = ((pred.float() - yb) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def loop_step(idx):  # the authors' loop: each video alone and unpadded, one step for the group
        with torch.autocast(**amp):
            pred = torch.cat([model({s: x[s][i : i + 1, : lengths[s][i]] for s in x}, {s: lengths[s][i : i + 1] for s in x})
                              for i in idx])
        loss = ((pred.float() - y[idx]) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if mode == "batched":
        step(x, lengths, y)  # warm-up
    else:
        loop_step(list(range(min(2, batch))))
    sync()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    if mode == "batched":
        for _ in range(steps):
            step(x, lengths, y)
        videos = steps * batch
    else:
        n = min(loop_videos, batch)
        for start in range(0, n, LOOP_BATCH):
            loop_step(list(range(start, min(start + LOOP_BATCH, n))))
        videos = n
    sync()
    seconds = time.perf_counter() - t
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux; growth over the process's state before the timed steps
        peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0, 0) / 1024
    return {"videos_per_s": videos / seconds, "peak_mem_mb": peak_mb}


def run_one(**kw) -> dict:
    """Measure in a fresh process (own peak memory, no state carried between runs)."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, kwds=kw)


def train_throughput(
    encoders=None,
    lengths=(150, 300, 450),
    batch: int = 32,
    steps: int = 2,
    loop_videos: int = 8,
    device: str = "cpu",
    precision: str = "32-true",
    threads: int = 0,
    size: str = "paper",
    flush_denormal: bool = True,
    progress=print,
    config: str | None = None,
) -> list[dict]:
    """Batched vs the authors' loop per encoder (default: every registered one with the size preset) or
    for a config's whole model, and video length."""
    rows = []
    encoders = benchmark_encoders(size) if encoders is None else list(encoders)
    modules = tuple(_modules(encoders))
    for enc in ([config] if config else encoders):
        for length in lengths:
            common = dict(encoder=enc, length=length, batch=batch, steps=steps, loop_videos=loop_videos, device=device,
                          precision=precision, threads=threads, size=size, flush_denormal=flush_denormal, config=config,
                          modules=modules)
            b = run_one(mode="batched", **common)
            lp = run_one(mode="loop", **common)
            row = {
                "encoder": enc, "size": size, "frames": length, "batch": batch, "device": device, "precision": precision,
                "flush_denormal": flush_denormal,
                "batched_videos_per_s": round(b["videos_per_s"], 2), "loop_videos_per_s": round(lp["videos_per_s"], 2),
                "speedup": round(b["videos_per_s"] / lp["videos_per_s"], 2),
                "batched_peak_mem_mb": round(b["peak_mem_mb"], 1), "loop_peak_mem_mb": round(lp["peak_mem_mb"], 1),
            }
            rows.append(row)
            if progress:
                progress(f"  {enc:<16} T={length:<4} batched {row['batched_videos_per_s']:>8.2f} v/s   loop {row['loop_videos_per_s']:>7.2f} v/s   x{row['speedup']}")
    return rows
