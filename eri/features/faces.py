"""Faces: MTCNN detection batched over frames, one face per frame (alignment: `eri.align`).

- Detection: facenet-pytorch's MTCNN (its P/R/O-Net weights ship inside the package, so this runs
  offline) on a batch of frames at once, ``keep_all=True``; faces under ``min_prob`` are dropped.
- Face choice when several are found: the largest near the centre, i.e. the highest
  ``sqrt(box area) - center_weight * distance(box centre, frame centre)`` (both in pixels). With the
  default 0.5 a face must be about twice as far off-centre before a same-size one wins (reaction
  videos are webcam shots of one person; a face on a poster or passing by is smaller or off-centre).
- Every k-th frame (``every_k``): detect on frames 0, k, 2k, ... and the last one (optionally on frames
  downscaled by ``detect_scale``) and interpolate boxes and landmarks linearly between keyframes. Where
  two neighbouring keyframes disagree (face in one, none in the other) or the face jumps by more than
  ``max_jump`` of its box size, the frames between them are detected too, so validity flags follow the
  face to the frame, not to the keyframe.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- detection
@dataclass
class FaceTrack:
    """One face per frame: ``boxes`` (T, 4) x1 y1 x2 y2, ``landmarks`` (T, 5, 2), ``probs`` (T,) and
    ``valid`` (T,) (False: no face; its rows are NaN). ``detected`` marks frames MTCNN ran on."""

    boxes: np.ndarray
    landmarks: np.ndarray
    probs: np.ndarray
    valid: np.ndarray
    detected: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "FaceTrack":
        nan = np.nan
        return cls(np.full((n, 4), nan), np.full((n, 5, 2), nan), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool))


def choose_face(boxes, probs, points, frame_hw, min_prob: float = 0.9, center_weight: float = 0.5):
    """Index of the face to keep among one frame's detections (largest near the centre), or None."""
    if boxes is None or len(boxes) == 0:
        return None
    boxes, probs = np.asarray(boxes, float), np.asarray(probs, float)
    ok = probs >= min_prob
    if not ok.any():
        return None
    h, w = frame_hw
    size = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    dist = np.hypot((boxes[:, 0] + boxes[:, 2]) / 2 - w / 2, (boxes[:, 1] + boxes[:, 3]) / 2 - h / 2)
    score = np.where(ok, size - center_weight * dist, -np.inf)
    return int(np.argmax(score))


DETECT_BATCH_MB = 512  # at most this much float image per MTCNN call


@contextmanager
def one_thread():
    """MTCNN's boxes move by ~1e-4 px with the number of torch threads (its float sums are split
    between them): it always runs on one, so sequential and pipelined extraction write the same bytes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class FaceDetector:
    """MTCNN over batches of frames, one face per frame, with optional every-k-th-frame detection.

    Config keys (all optional): ``min_face_size`` (MTCNN, pixels at detection scale), ``thresholds``
    (MTCNN's three stage thresholds), ``min_prob`` (drop weaker faces), ``center_weight`` (face choice),
    ``batch_size`` (frames per MTCNN call), ``every_k`` (1: every frame), ``detect_scale`` (downscale
    factor for detection, 1.0: native), ``detect_max_side`` (detect at most this long a side), ``max_jump`` (face moves more than this x its size between
    keyframes -> detect the frames between), ``device`` (cpu, cuda, cuda:1, auto).
    """

    DEFAULTS = dict(
        min_face_size=40,
        thresholds=(0.6, 0.7, 0.7),
        min_prob=0.9,
        center_weight=0.5,
        batch_size=32,
        every_k=1,
        detect_scale=1.0,
        detect_max_side=None,
        max_jump=0.25,
        device="cpu",
    )

    def __init__(self, **config):
        unknown = sorted(set(config) - set(self.DEFAULTS))
        if unknown:
            raise ValueError(f"face config: unknown key(s) {unknown}; valid keys: {sorted(self.DEFAULTS)}")
        self.config = {**self.DEFAULTS, **config}
        c = self.config
        if int(c["every_k"]) < 1 or not 0 < float(c["detect_scale"]) <= 1:
            raise ValueError(
                f"face config: every_k must be >= 1 and 0 < detect_scale <= 1, got {c['every_k']}, {c['detect_scale']}"
            )
        from facenet_pytorch import MTCNN  # weights ship inside the package: offline

        dev = c["device"]
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(dev)
        self.mtcnn = MTCNN(
            keep_all=True,
            select_largest=False,
            post_process=False,
            device=self.device,
            min_face_size=int(c["min_face_size"]),
            thresholds=list(c["thresholds"]),
        )
        self.mtcnn.eval()

    # -- raw detection on chosen frames
    def detect_frames(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """MTCNN on every given frame (batched): chosen face's boxes (N, 4), landmarks (N, 5, 2), probs, valid."""
        c = self.config
        n = len(frames)
        boxes, lms, probs = np.full((n, 4), np.nan), np.full((n, 5, 2), np.nan), np.zeros(n)
        if n == 0:
            return boxes, lms, probs, np.zeros(0, bool)
        h, w = frames.shape[1:3]
        scale = float(c["detect_scale"])
        if c["detect_max_side"]:  # aligned crops still come from the full-resolution frames
            scale = min(scale, int(c["detect_max_side"]) / max(h, w))
        # frames per MTCNN call, also bounded in bytes (its float copy of a frame at detection size)
        bs = max(1, min(int(c["batch_size"]), int(DETECT_BATCH_MB * 2**20 // (4 * 3 * h * w * scale * scale + 1))))
        piece = max(1, int(DETECT_BATCH_MB * 2**20 // (4 * 3 * h * w)))  # frames resized at once (full-size floats)
        if min(h, w) * scale < int(c["min_face_size"]):  # MTCNN's pyramid would be empty: no face can be found
            return boxes, lms, probs, np.zeros(n, bool)
        for s in range(0, n, bs):
            batch = torch.as_tensor(np.ascontiguousarray(frames[s : s + bs]), device=self.device)
            if scale < 1:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                batch = torch.cat([
                    F.interpolate(x.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", antialias=True,
                                  align_corners=False).round().clamp(0, 255).permute(0, 2, 3, 1)
                    for x in batch.split(piece)
                ])
            with one_thread():
                b_boxes, b_probs, b_points = self.mtcnn.detect(batch, landmarks=True)
            for j in range(len(batch)):
                bx = b_boxes[j]
                if bx is None:
                    continue
                k = choose_face(bx / scale, b_probs[j], None, (h, w), c["min_prob"], c["center_weight"])
                if k is None:
                    continue
                boxes[s + j] = np.asarray(bx[k], float) / scale
                lms[s + j] = np.asarray(b_points[j][k], float) / scale
                probs[s + j] = float(b_probs[j][k])
        return boxes, lms, probs, np.isfinite(boxes).all(1)

    def __call__(self, frames: np.ndarray) -> FaceTrack:
        """Detect (every frame, or every k-th + interpolation) on a whole video's frames (T, H, W, 3)."""
        tracks = [t for _, t in TrackStream(self).feed(frames, last=True)]
        return tracks[0] if tracks else FaceTrack.empty(0)

    def _fill(self, track: FaceTrack, frames: np.ndarray, idx: np.ndarray) -> None:
        idx = np.asarray(idx, int)
        b, l, p, v = self.detect_frames(frames[idx])
        track.boxes[idx], track.landmarks[idx], track.probs[idx], track.valid[idx] = b, l, p, v
        track.detected[idx] = True


def make_detector(cfg) -> FaceDetector:
    """The detector an extraction config asks for (its ``faces`` keys but the crop size, its device)."""
    from omegaconf import OmegaConf

    fc = OmegaConf.to_container(cfg.faces) if not isinstance(cfg.faces, dict) else dict(cfg.faces)
    fc.pop("crop_size")
    return FaceDetector(**fc, device=cfg.device)


class TrackStream:
    """Every-k-th detection over a video that arrives in chunks, identical in its choices to detecting
    on the whole video at once: keyframes are frames 0, k, 2k, ... of the video and its last frame,
    the frames between two keyframes that disagree (a face appears, vanishes or jumps) are detected
    too, and the rest are interpolated between keyframes. A chunk's frames after its last keyframe are
    held back (at most ``every_k`` frames) until the next keyframe arrives; ``feed`` returns the frames
    whose track is final, with their track."""

    def __init__(self, detector: FaceDetector):
        self.det, self.k = detector, int(detector.config["every_k"])
        self.start = 0  # video index of the first held frame
        self.frames: np.ndarray | None = None
        self.track = FaceTrack.empty(0)
        self.checked = 0  # keyframe pairs up to this held index have been checked for disagreement

    def feed(self, frames: np.ndarray, last: bool = False) -> list[tuple[np.ndarray, FaceTrack]]:
        """Add frames (N, H, W, 3); ``last``: the video ends with them. Returns ``[(frames, track)]``."""
        if len(frames):
            self.frames = frames if self.frames is None or not len(self.frames) else np.concatenate([self.frames, frames])
            new = FaceTrack.empty(len(frames))
            self.track = FaceTrack(*(np.concatenate([a, b]) for a, b in zip(_fields(self.track), _fields(new))))
        n = 0 if self.frames is None else len(self.frames)
        if n == 0:
            return []
        idx = np.arange(self.start, self.start + n)
        keys = idx[idx % self.k == 0] - self.start
        if last and (not len(keys) or keys[-1] != n - 1):
            keys = np.r_[keys, n - 1]
        todo = keys[~self.track.detected[keys]]
        if len(todo):
            self.det._fill(self.track, self.frames, todo)
        dense = []
        for a, b in zip(keys[:-1], keys[1:]):
            if b <= self.checked or b - a < 2:
                continue
            va, vb = self.track.valid[a], self.track.valid[b]
            t = self.track
            size = np.sqrt((t.boxes[[a, b], 2] - t.boxes[[a, b], 0]) * (t.boxes[[a, b], 3] - t.boxes[[a, b], 1]))
            centre = (t.boxes[[a, b], :2] + t.boxes[[a, b], 2:]) / 2
            jump = va and vb and np.hypot(*(centre[1] - centre[0])) > self.det.config["max_jump"] * size.min()
            if va != vb or jump:
                dense.extend(range(a + 1, b))
        if len(keys):
            self.checked = max(self.checked, int(keys[-1]))
        if dense:
            self.det._fill(self.track, self.frames, np.asarray(dense))
        interpolate_track(self.track)
        if last:
            done = n
        elif len(keys):
            done = int(keys[-1])  # the last keyframe stays: it anchors the frames after it
        else:
            return []
        out = [(self.frames[:done], FaceTrack(*(f[:done] for f in _fields(self.track))))] if done else []
        self.frames = self.frames[done:]
        self.track = FaceTrack(*(f[done:] for f in _fields(self.track)))
        self.start += done
        self.checked = max(0, self.checked - done)
        return out


def _fields(t: FaceTrack) -> tuple:
    return t.boxes, t.landmarks, t.probs, t.valid, t.detected


def interpolate_track(track: FaceTrack) -> FaceTrack:
    """Fill frames not detected on by linear interpolation between the nearest detected frames, where
    both have a face; frames between a face and no face (or outside the detected range) stay invalid."""
    det = np.flatnonzero(track.detected)
    todo = np.flatnonzero(~track.detected)
    if len(det) == 0 or len(todo) == 0:
        return track
    right = np.searchsorted(det, todo)
    inside = (right > 0) & (right < len(det))
    todo, right = todo[inside], right[inside]
    a, b = det[right - 1], det[right]
    ok = track.valid[a] & track.valid[b]
    todo, a, b = todo[ok], a[ok], b[ok]
    w = ((todo - a) / (b - a))[:, None]
    track.boxes[todo] = (1 - w) * track.boxes[a] + w * track.boxes[b]
    track.landmarks[todo] = (1 - w[:, :, None]) * track.landmarks[a] + w[:, :, None] * track.landmarks[b]
    track.probs[todo] = np.minimum(track.probs[a], track.probs[b])
    track.valid[todo] = True
    return track
