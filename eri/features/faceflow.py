"""The face half of extraction, chunk by chunk: decode (`FrameStream`) -> detect (`TrackStream`) ->
align groups of ``faces.batch_size`` valid frames. It yields `Crops` as they are ready, a `Decoded`
after each chunk (the progress bar's frame count) and a `FaceSummary` at the end, so a video of any length or resolution is processed in flat memory
(about ``decode.chunk_mb`` of frames, plus up to ``every_k`` held-back frames and one group of at
most ``faces.batch_size`` frames and `GROUP_MB`).

Groups are formed across chunk boundaries, so the extractors see the same batches whatever the chunk
size: chunked and whole-video extraction differ only where MTCNN batched its frames differently
(float rounding). The same generator runs in the main process (sequential) and in decode workers
(`eri.features.workers`), so both write the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eri.align import align_faces
from eri.features.faces import TrackStream
from eri.features.video import DecodeError, FrameStream

GROUP_MB = 128  # full-size frames aligned at once


@dataclass
class Crops:
    idx: np.ndarray  # video frame indices of these crops
    crops: object  # uint8 (n, S, S, 3): a tensor on the detector's device, or numpy (``as_numpy``)


@dataclass
class Features:
    """What a worker sends instead of `Crops` when it runs the face extractors itself
    (``extract_in: workers``): each stream's features of these frames, and the streams that failed."""

    idx: np.ndarray
    outputs: dict  # stream -> (n, dim) float array
    failed: dict  # stream -> error message (the stream is skipped for the rest of the video)


@dataclass
class Decoded:
    """Progress (one per decoded chunk): ``frames`` of the video done so far, of about ``expected``
    (the container's count at the decode rate; None when it does not say)."""

    frames: int
    expected: int | None


def extract_crops(extractors: dict, crops, failed: dict) -> dict:
    """Run each face extractor not yet ``failed`` on one group of crops: ``{stream: (n, dim) numpy}``.
    An extractor that raises is recorded in ``failed`` and skipped for the rest of the video. The
    same code runs in the main process and in workers, so both write the same bytes."""
    import torch

    outputs = {}
    for name, extractor in extractors.items():
        if name in failed:
            continue
        try:
            out = extractor(crops)
            outputs[name] = out.cpu().numpy() if torch.is_tensor(out) else np.asarray(out)
        except Exception as e:  # noqa: BLE001 - one failing extractor never stops the others
            failed[name] = f"{type(e).__name__}: {e}"
    return outputs


@dataclass
class FaceSummary:
    n_frames: int
    valid: np.ndarray  # (T,) bool
    timestamps: np.ndarray  # (T,) seconds
    partial: str | None  # a note when fewer frames were decoded than the container promises


def face_flow(path, cfg, detector, as_numpy: bool = False):
    """Yield `Crops` for every group of valid frames and a `Decoded` per chunk, then one `FaceSummary`. Raises `DecodeError`
    for a file without decodable frames."""
    stream = FrameStream(path, cfg.decode.fps, cfg.decode.max_side, cfg.decode.chunk_mb,
                         max_pixels=cfg.decode.max_pixels)
    tracker = TrackStream(detector)
    bs, size = int(cfg.faces.batch_size), int(cfg.faces.crop_size)  # bs: fixed by the resolution, below
    valid, times, shape = [], [], None
    held_frames, held_lms, held_idx = [], [], []
    offset = 0

    def group(force: bool):
        while held_idx and (force or len(held_idx) >= bs):
            n = min(bs, len(held_idx))
            crops = align_faces(np.stack(held_frames[:n]), np.stack(held_lms[:n]), size,
                                device=detector.device, as_tensor=not as_numpy)
            yield Crops(np.asarray(held_idx[:n]), crops)
            del held_frames[:n], held_lms[:n], held_idx[:n]

    def emit(blocks):
        nonlocal offset
        for frames, track in blocks:
            for i in np.flatnonzero(track.valid):
                held_frames.append(frames[i].copy())  # a view would keep its whole chunk alive
                held_lms.append(track.landmarks[i])
                held_idx.append(offset + i)
            valid.append(track.valid)
            offset += len(frames)
            yield from group(force=False)
            yield Decoded(offset, expected())

    def expected() -> int | None:
        p, nominal = stream.promised_frames, stream.nominal_fps
        return int(round(p * float(stream.fps) / nominal)) if p and stream.fps and nominal else p

    for frames, ts in stream:
        if shape is None:  # a group holds at most GROUP_MB of full-size frames (4K: 5 frames)
            bs = max(1, min(bs, int(GROUP_MB * 2**20 // frames[0].nbytes)))
        shape = frames.shape[1:]
        times.append(ts)
        yield from emit(tracker.feed(frames))
    if shape is None:
        raise DecodeError(f"{path}: no video frames")
    yield from emit(tracker.feed(np.zeros((0, *shape), np.uint8), last=True))
    yield from group(force=True)
    yield FaceSummary(offset, np.concatenate(valid), np.concatenate(times), stream.partial())
