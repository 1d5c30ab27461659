"""Extraction benchmark: frames/s of each stage and of the whole pipeline on one video, and the landmark
error of every-k-th-frame detection against detection on every frame.

Stages (each timed alone on the same decoded frames, after one warm-up call): ``decode`` (PyAV, RGB),
``detect`` (MTCNN + face choice; every frame, and every k-th frame with interpolation at the given
detection scales), ``align`` (5-point similarity warp to the crop), each face extractor on the aligned
crops, and ``audio`` (MFCC tokens of the whole soundtrack; reported per video frame so that it adds up).
``pipeline`` runs `eri.features.pipeline.Extraction` on a folder holding the video (decode + detect +
align + every extractor + writing the store), from a fresh store each time, models already loaded.

Landmark error: for the frames where both runs found a face, the distance between the interpolated
(or downscaled-detection) landmarks and every-frame full-resolution landmarks, divided by the
inter-ocular distance of the latter (the usual NME), mean and 95th percentile; ``valid agree`` is the
fraction of frames with the same validity flag.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

DEFAULT_VIDEO = "WolfgangLanger_Pexels.mp4"


def default_video() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("feat").origin).parent / "tests" / "data" / DEFAULT_VIDEO


def _timed(fn, repeat: int = 1):
    out = fn()  # warm-up (model load, first-call allocations) is not timed
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, (time.perf_counter() - t) / repeat


def nme(test, ref) -> np.ndarray:
    """Per-frame mean landmark distance / inter-ocular distance of ``ref`` (both (N, 5, 2))."""
    iod = np.linalg.norm(ref[:, 1] - ref[:, 0], axis=-1)
    return np.linalg.norm(test - ref, axis=-1).mean(-1) / iod


def extraction_benchmark(
    video: str | Path | None = None,
    device: str = "cpu",
    ks=(1, 5),
    scales=(1.0, 0.5),
    extractors=("holistic", "expression"),
    audio_backends=("librosa", "torchaudio"),
    max_frames: int | None = None,
    batch_size: int = 32,
    pipeline: bool = True,
) -> dict:
    """Run every measurement; returns ``{"stages": DataFrame, "landmarks": DataFrame, "video": {...}}``."""
    from eri.align import align_faces
    from eri.features.extractors import build_extractor
    from eri.features.faces import FaceDetector
    from eri.features.pipeline import Extraction, load_extract_config  # noqa: F401
    from eri.features.video import decode

    video = Path(video or default_video())
    v, t_dec = _timed(lambda: decode(video))
    frames = v.frames[:max_frames] if max_frames else v.frames
    n = len(frames)
    info = {
        "video": video.name,
        "frames": n,
        "size": f"{frames.shape[2]}x{frames.shape[1]}",
        "fps": round(v.fps, 3),
        "device": device,
        "threads": torch.get_num_threads(),
    }
    rows = [{"stage": "decode (PyAV, video + audio)", "frames/s": v.n_frames / t_dec}]

    ref = None
    lm_rows = []
    for scale in scales:
        for k in ks:
            det = FaceDetector(every_k=k, detect_scale=scale, device=device, batch_size=batch_size)
            track, t = _timed(lambda: det(frames))
            rows.append(
                {
                    "stage": f"detect (MTCNN, every {k}, scale {scale})",
                    "frames/s": n / t,
                    "detected frames": int(track.detected.sum()),
                }
            )
            if k == 1 and scale == 1.0:
                ref = track
            elif ref is not None:
                both = ref.valid & track.valid
                e = nme(track.landmarks[both], ref.landmarks[both])
                interp = both & ~track.detected
                e_interp = nme(track.landmarks[interp], ref.landmarks[interp]).mean() if interp.any() else np.nan
                lm_rows.append(
                    {
                        "every_k": k,
                        "detect_scale": scale,
                        "NME mean": e.mean(),
                        "NME p95": np.percentile(e, 95),
                        "NME mean (interpolated frames)": e_interp,
                        "valid agree": float((ref.valid == track.valid).mean()),
                    }
                )
    if ref is None:
        ref = FaceDetector(device=device, batch_size=batch_size)(frames)
    idx = np.flatnonzero(ref.valid)
    chunks = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    crops, t = _timed(
        lambda: np.concatenate([align_faces(frames[c], ref.landmarks[c], 224, device=device) for c in chunks])
    )
    rows.append({"stage": "align (224 crops)", "frames/s": len(idx) / t})
    for name in extractors:
        conf = {"random_init": True} if name == "holistic" else {}
        try:
            ext = build_extractor(name, {**conf, "device": device})
        except (FileNotFoundError, ImportError) as e:
            rows.append({"stage": f"{name}", "frames/s": np.nan, "note": str(e).split(".")[0]})
            continue
        _, t = _timed(lambda: ext(crops))
        rows.append({"stage": f"{name} ({ext.dim}-d)", "frames/s": len(crops) / t})
    if v.audio is not None:
        for backend in audio_backends:
            ext = build_extractor("audio", {"backend": backend, "device": device})
            _, t = _timed(lambda: ext(v.audio))
            rows.append({"stage": f"audio MFCC tokens ({backend})", "frames/s": v.n_frames / t})

    if pipeline:
        tmp = Path(tempfile.mkdtemp(prefix="eri-bench-"))
        try:
            (tmp / "data").mkdir()
            shutil.copy(video, tmp / "data" / video.name)
            for k, scale in [(1, 1.0), *[(k, s) for s in scales for k in ks if (k, s) != (1, 1.0)]]:
                items = [{"name": e, "config": {"random_init": True} if e == "holistic" else {}} for e in extractors]
                items.append({"name": "audio", "config": {"backend": "torchaudio" if device != "cpu" else "librosa"}})
                import yaml

                cfg_path = tmp / "cfg.yaml"
                cfg_path.write_text(
                    yaml.safe_dump(
                        {
                            "device": device,
                            "faces": {"every_k": k, "detect_scale": scale, "batch_size": batch_size},
                            "extractors": items,
                        }
                    )
                )
                cfg = load_extract_config(cfg_path)
                shutil.rmtree(tmp / "data" / "features", ignore_errors=True)
                job = Extraction(cfg, tmp / "data", progress=False)  # models load here, untimed
                job.detector  # noqa: B018 - MTCNN too
                t = time.perf_counter()
                res = job.run()
                t = time.perf_counter() - t
                rows.append({"stage": f"pipeline end to end (every {k}, scale {scale})", "frames/s": res["frames"] / t})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"stages": pd.DataFrame(rows), "landmarks": pd.DataFrame(lm_rows), "video": info}
