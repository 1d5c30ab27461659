"""Decoding with PyAV: RGB frames with their presentation times, and the audio as 16 kHz mono float32.

- Frames come with the timestamps the container gives them (``pts * time_base``, relative to the first
  frame), so variable-frame-rate videos keep their real timing. ``fps=None`` keeps every frame; a rate
  ``fps`` keeps, for each tick ``t = t0 + i / fps`` up to the last frame, the last frame shown at ``t``
  (what a player would display), so a 30 fps video at 10 fps keeps every third frame and a VFR video
  is resampled onto a regular grid without interpolating pixels.
- Rotation metadata (the display matrix of phone videos) is applied to the pixels, so faces are upright.
- Audio is resampled by FFmpeg's resampler (``av.AudioResampler``) to 16 kHz mono float32. A file with
  no audio stream gives ``audio=None`` (recorded by the pipeline, not an error).
- Whole videos are decoded into memory ((T, H, W, 3) uint8: about 0.7 MB per 640x360 frame, 300 MB for
  15 s at 30 fps). Reaction videos are short; for long inputs set ``max_side`` to downscale on decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from eri.errors import InputError

SAMPLE_RATE = 16_000


class DecodeError(InputError, RuntimeError):
    """A media file that cannot be opened or decoded (named in the message)."""


@dataclass
class Video:
    path: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, upright
    timestamps: np.ndarray  # (T,) float64 seconds from the first frame
    fps: float  # nominal rate of the stream (average for VFR)
    audio: np.ndarray | None  # (n,) float32 at SAMPLE_RATE, None when the file has no audio track
    rotation: int = 0  # degrees counter-clockwise the decoder's output was rotated by to make it upright
    codec: str = ""
    promised_frames: int | None = None  # frames the container says the stream holds (None: it does not say)
    damage: str | None = None  # why decoding stopped early (a truncated or damaged file), None if it did not
    decoded_frames: int = 0  # native frames decoded (before any ``fps`` resampling)

    def partial(self) -> str | None:
        """A one-line note when fewer frames were decoded than the container promises, else None."""
        promised = self.promised_frames
        short = promised is not None and self.decoded_frames < promised - max(2, 0.02 * promised)
        if not (short or self.damage):
            return None
        of = f" of the {promised} the container promises" if promised else ""
        return f"{self.path}: partially decoded: {self.decoded_frames} frames{of}" + (f" ({self.damage})" if self.damage else "")

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def duration(self) -> float:
        if self.n_frames:
            return float(self.timestamps[-1]) + 1.0 / max(self.fps, 1e-6)
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


def _rotate(img: np.ndarray, degrees: int) -> np.ndarray:
    """Apply a display rotation (counter-clockwise degrees, as ``VideoFrame.rotation`` reports it)."""
    k = int(round(degrees / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


def _resample_times(ts: np.ndarray, fps: float) -> np.ndarray:
    """Indices of the frames shown at ticks t0 + i / fps (the last frame with pts <= tick)."""
    if len(ts) == 0:
        return np.zeros(0, int)
    ticks = ts[0] + np.arange(int(np.floor((ts[-1] - ts[0]) * fps + 1e-6)) + 1) / fps
    return np.clip(np.searchsorted(ts, ticks + 1e-6, side="right") - 1, 0, len(ts) - 1)


def _promised_frames(stream, container, rate: float) -> int | None:
    """Frames a video stream should hold: the container's frame count, else its duration x rate."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base and rate:
        return int(round(float(stream.duration * stream.time_base) * rate))
    if container.duration and rate:
        return int(round(container.duration / 1e6 * rate))
    return None


def decode_audio(path: str | Path, container=None) -> np.ndarray | None:
    """The first audio stream as 16 kHz mono float32, or ``None`` when there is none."""
    own = container is None
    try:
        c = av.open(str(path)) if own else container
    except (av.FFmpegError, OSError) as e:
        raise DecodeError(f"{path}: cannot open: {e}") from e
    try:
        if not c.streams.audio:
            return None
        stream = c.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = []
        try:
            for frame in c.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as e:
            raise DecodeError(f"{path}: audio stream unreadable: {e}") from e
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    finally:
        if own:
            c.close()


def decode(path: str | Path, fps: float | None = None, audio: bool = True, max_side: int | None = None) -> Video:
    """Decode a video file into upright RGB frames (+ timestamps) and 16 kHz mono audio.

    ``fps``: None keeps the native frames; a number resamples in time (see the module docstring).
    ``max_side``: downscale frames so that their longer side is at most this (None: native size).
    A file without a video stream, or whose video stream has no decodable frame, gives T = 0 frames;
    the caller decides whether that is an error. Unreadable files raise `DecodeError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise DecodeError(f"{path}: file not found")
    try:
        c = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise DecodeError(f"{path}: cannot open as media ({type(e).__name__}: {e})") from e
    try:
        frames, ts, rotation, nominal, codec, promised, damage = [], [], 0, 0.0, "", None, None
        if c.streams.video:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            codec = stream.codec_context.name
            rate = stream.average_rate or stream.guessed_rate
            nominal = float(rate) if rate else 0.0
            tb = float(stream.time_base) if stream.time_base else 1.0 / max(nominal, 1.0)
            promised = _promised_frames(stream, c, nominal)
            size = None  # every frame gets the first frame's (possibly downscaled) size
            try:
                for i, frame in enumerate(c.decode(stream)):
                    rotation = frame.rotation or 0
                    if size is None:
                        w, h = frame.width, frame.height
                        if max_side and max(w, h) > max_side:
                            s = max_side / max(w, h)
                            w, h = max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2)
                        size = (w, h)
                    if (frame.width, frame.height) != size:  # downscaling, or a resolution change mid-stream
                        img = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                    else:
                        img = frame.to_ndarray(format="rgb24")
                    frames.append(_rotate(img, rotation))
                    pts = frame.pts if frame.pts is not None else frame.dts
                    ts.append(pts * tb if pts is not None else i / max(nominal, 1.0))
            except av.FFmpegError as e:
                if not frames:
                    raise DecodeError(f"{path}: video stream undecodable ({type(e).__name__}: {e})") from e
                # a truncated file: keep the frames decoded before the damage, and say so
                damage = f"{type(e).__name__}: {e}"
        decoded = len(frames)
        timestamps = np.asarray(ts, np.float64)
        order = np.argsort(timestamps, kind="stable")  # pts order (decoders already output it; be safe)
        timestamps = timestamps[order] - (timestamps.min() if len(ts) else 0.0)
        frames = [frames[i] for i in order]
        if fps and len(frames):
            keep = _resample_times(timestamps, float(fps))
            frames = [frames[i] for i in keep]
            timestamps = timestamps[0] + np.arange(len(keep)) / float(fps)
        arr = np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
        wave = None
        if audio:
            wave = decode_audio(path)  # a second pass over the file: simpler than demuxing both at once
        rate = float(fps) if fps else nominal
        return Video(str(path), arr, timestamps, rate, wave, int(rotation), codec, promised, damage, decoded)
    finally:
        c.close()


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float = 25.0,
    codec: str | None = None,
    times: np.ndarray | None = None,
    audio: np.ndarray | None = None,
    audio_rate: int = SAMPLE_RATE,
    audio_codec: str | None = None,
    rotation: int = 0,
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
) -> None:
    """Write RGB frames (T, H, W, 3) (+ mono/stereo float audio (n,) or (channels, n)) with PyAV.

    ``times``: presentation times in seconds for a variable frame rate (default i / fps). ``rotation``:
    display-matrix rotation (counter-clockwise degrees) stored in the container. Used to cut clips for
    tests and benchmarks and to make media with given codecs; written to a temporary name, then renamed.
    Default codecs: VP9 + Opus for .webm, H.264 + AAC otherwise. ``options``: encoder options
    (e.g. ``{"preset": "ultrafast"}`` for libx264).
    """
    from eri.io import atomic_write_bytes

    path = Path(path)
    fmt = {".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".mkv": "matroska"}.get(path.suffix.lower())
    codec = codec or ("libvpx-vp9" if fmt == "webm" else "libx264")
    audio_codec = audio_codec or ("libopus" if fmt == "webm" else "aac")
    if audio_codec == "libopus" and audio is not None and audio_rate != 48000:
        raise ValueError("write_video: Opus needs audio_rate=48000")

    def write(f):
        with av.open(f, "w", format=fmt) as c:
            from fractions import Fraction

            vs = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
            vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
            vs.options = {**({"x265-params": "log-level=error"} if codec == "libx265" else {}), **(options or {})}
            if times is not None:
                vs.time_base = vs.codec_context.time_base = Fraction(1, 1000)
            if rotation:
                vs.set_display_rotation(rotation)
            as_ = None
            if audio is not None:
                as_ = c.add_stream(audio_codec, rate=audio_rate)
                wav = np.atleast_2d(np.asarray(audio, np.float32))
                as_.layout = "mono" if len(wav) == 1 else "stereo"
            for i, img in enumerate(frames):
                fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                if times is not None:
                    fr.pts, fr.time_base = int(round(times[i] * 1000)), Fraction(1, 1000)
                for p in vs.encode(fr):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
            if as_ is not None:
                fmt_a = "fltp"
                n = as_.codec_context.frame_size or 1024
                for s in range(0, wav.shape[1], n):
                    chunk = np.ascontiguousarray(wav[:, s : s + n])
                    af = av.AudioFrame.from_ndarray(chunk, format=fmt_a, layout=as_.layout.name)
                    af.sample_rate, af.pts = audio_rate, s
                    for p in as_.encode(af):
                        c.mux(p)
                for p in as_.encode():
                    c.mux(p)

    atomic_write_bytes(path, write)


def cut(src: str | Path, dst: str | Path, start: float, duration: float, codec: str = "libx264") -> Path:
    """Re-encode ``duration`` seconds of ``src`` from ``start`` (frames and audio) into ``dst``."""
    v = decode(src)
    keep = (v.timestamps >= start) & (v.timestamps < start + duration)
    audio = None
    if v.audio is not None:
        audio = v.audio[int(start * SAMPLE_RATE) : int((start + duration) * SAMPLE_RATE)]
    audio = audio if audio is not None and len(audio) else None
    write_video(dst, v.frames[keep], fps=v.fps or 25.0, codec=codec, audio=audio)
    return Path(dst)
