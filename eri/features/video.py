"""Decoding with PyAV: RGB frames with their presentation times, and the audio as 16 kHz mono float32.

- Frames come with the timestamps the container gives them (``pts * time_base``, relative to the first
  frame), so variable-frame-rate videos keep their real timing. ``fps=None`` keeps every frame; a rate
  ``fps`` keeps, for each tick ``t = t0 + i / fps`` up to the last frame, the last frame shown at ``t``
  (what a player would display), so a 30 fps video at 10 fps keeps every third frame and a VFR video
  is resampled onto a regular grid without interpolating pixels.
- Rotation metadata (the display matrix of phone videos) is applied to the pixels, so faces are upright.
- Audio is resampled by FFmpeg's resampler (``av.AudioResampler``) to 16 kHz mono float32. A file with
  no audio stream gives ``audio=None`` (recorded by the pipeline, not an error).
- `FrameStream` decodes in chunks of at most ``chunk_mb`` MB of frames (extraction's way: memory stays
  flat whatever the length or resolution); `decode` gathers a whole video (tests, tools, short clips).
- Decompression bombs: a 752 KB mp4 can declare 8 frames of 16000x16000 (the decoder alone then
  allocates GBs). A stream whose declared or decoded frames have more than ``max_pixels`` pixels
  (`MAX_PIXELS`, 8K UHD) is refused before decoding, with one line naming the file; and frames are
  scaled by FFmpeg's reformatter, so no array larger than ``max_side`` (`MAX_SIDE` = 3840, 4K, when
  None) is made. Ordinary videos (up to 4K) decode at their native size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from eri.errors import InputError

SAMPLE_RATE = 16_000
MAX_SIDE = 3840  # frames are downscaled to at most this longer side when no ``max_side`` is given (4K UHD)
MAX_PIXELS = 7680 * 4320  # frames with more pixels (8K UHD) are refused: see the module docstring


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

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def duration(self) -> float:
        if self.n_frames:
            return float(self.timestamps[-1]) + 1.0 / max(self.fps, 1e-6)
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE

    def partial(self) -> str | None:
        """A one-line note when fewer frames were decoded than the container promises, else None."""
        return partial_note(self.path, self.promised_frames, self.decoded_frames, self.damage)


MMAP_THRESHOLD = 128 * 1024  # bytes: larger blocks are mmapped, so freed frame buffers go back to the OS


def return_freed_frames() -> bool:
    """Have glibc serve blocks over `MMAP_THRESHOLD` by ``mmap`` (``mallopt(M_MMAP_THRESHOLD)``), so a
    chunk's freed frames, detection floats and crops are returned to the OS instead of fragmenting the
    heap. Without it, RSS crept up with video length (a 600 s 640x360 video peaked 540 MB above a 60 s
    one); with it, a face pass over 3,800 frames stayed at its first chunk's peak. False (no effect)
    off glibc. Called once per extraction process (`Extraction.run`, each decode worker)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # M_MMAP_THRESHOLD = -3 in glibc's malloc.h
    except (OSError, AttributeError):
        return False


def partial_note(path, promised: int | None, decoded: int, damage: str | None) -> str | None:
    """"partially decoded: 21 frames of the 72 the container promises (why)", or None when complete."""
    short = promised is not None and decoded < promised - max(2, 0.02 * promised)
    if not (short or damage):
        return None
    of = f" of the {promised} the container promises" if promised else ""
    return f"{path}: partially decoded: {decoded} frames{of}" + (f" ({damage})" if damage else "")


def _rotate(img: np.ndarray, degrees: int) -> np.ndarray:
    """Apply a display rotation (counter-clockwise degrees, as ``VideoFrame.rotation`` reports it)."""
    k = int(round(degrees / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


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


class FrameStream:
    """A video's frames in chunks of at most ``chunk_mb`` MB, decoded on demand: memory stays flat
    whatever the video's length or resolution. ``fps`` and ``max_side`` as in `decode` (resampling in
    time is done on the fly: each tick takes the last frame shown at it). Frames are taken to arrive in
    presentation order, as FFmpeg's decoders output them; timestamps count from the first frame.

    After iterating: ``nominal_fps``, ``rotation``, ``codec``, ``promised_frames``, ``decoded_frames``
    and ``damage`` (why decoding stopped early, or None) describe the stream, as on `Video`."""

    def __init__(self, path: str | Path, fps: float | None = None, max_side: int | None = None, chunk_mb: float = 256,
                 max_pixels: int | None = MAX_PIXELS):
        self.path, self.fps, self.chunk_mb = Path(path), fps, chunk_mb
        self.max_side, self.max_pixels = max_side or MAX_SIDE, max_pixels
        self.nominal_fps, self.rotation, self.codec = 0.0, 0, ""
        self.promised_frames: int | None = None
        self.decoded_frames, self.damage = 0, None

    def partial(self) -> str | None:
        return partial_note(self.path, self.promised_frames, self.decoded_frames, self.damage)

    def __iter__(self):
        self.decoded_frames, self.damage, self.rotation = 0, None, 0
        path = self.path
        if not path.exists():
            raise DecodeError(f"{path}: file not found")
        try:
            c = av.open(str(path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise DecodeError(f"{path}: cannot open as media ({type(e).__name__}: {e})") from e
        try:
            if c.streams.video:
                cc = c.streams.video[0].codec_context
                self._check_size(cc.width, cc.height, "declares")  # before the decoder allocates anything
                yield from self._chunks(c, c.streams.video[0])
        finally:
            c.close()

    def _check_size(self, width: int, height: int, how: str) -> None:
        """Refuse frames of more than ``max_pixels`` pixels (a decompression bomb), naming the file."""
        if self.max_pixels and (width or 0) * (height or 0) > self.max_pixels:
            raise DecodeError(
                f"{self.path}: refused: its video stream {how} {width}x{height} frames "
                f"({width * height / 1e6:.0f} MP), more than decode.max_pixels = {self.max_pixels} "
                f"({self.max_pixels / 1e6:.0f} MP); raise it if the video is real"
            )

    def _frames(self, c, stream):
        """(upright RGB frame, seconds from the first frame) in presentation order, at the native rate."""
        stream.thread_type = "AUTO"
        self.codec = stream.codec_context.name
        rate = stream.average_rate or stream.guessed_rate
        self.nominal_fps = float(rate) if rate else 0.0
        tb = float(stream.time_base) if stream.time_base else 1.0 / max(self.nominal_fps, 1.0)
        self.promised_frames = _promised_frames(stream, c, self.nominal_fps)
        size, t0, last = None, None, -np.inf  # every frame gets the first frame's (possibly downscaled) size
        seen = None
        try:
            for i, frame in enumerate(c.decode(stream)):
                self.rotation = frame.rotation or 0
                if (frame.width, frame.height) != seen:  # the bitstream may disagree with the container
                    self._check_size(frame.width, frame.height, "decodes")
                    seen = (frame.width, frame.height)
                if size is None:
                    w, h = frame.width, frame.height
                    if self.max_side and max(w, h) > self.max_side:
                        s = self.max_side / max(w, h)
                        w, h = max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2)
                    size = (w, h)
                if (frame.width, frame.height) != size:  # downscaling, or a resolution change mid-stream
                    img = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                else:
                    img = frame.to_ndarray(format="rgb24")
                pts = frame.pts if frame.pts is not None else frame.dts
                t = pts * tb if pts is not None else i / max(self.nominal_fps, 1.0)
                t0 = t if t0 is None else t0
                last = max(last, t - t0)  # out-of-order stamps are held at the last one seen
                self.decoded_frames += 1
                yield _rotate(img, self.rotation), last
        except av.FFmpegError as e:
            if not self.decoded_frames:
                raise DecodeError(f"{self.path}: video stream undecodable ({type(e).__name__}: {e})") from e
            self.damage = f"{type(e).__name__}: {e}"  # a truncated file: the frames before the damage are kept

    def _resampled(self, frames):
        """Frames on the grid i / fps: the last frame shown at each tick (a tick up to 1 us early counts)."""
        fps, i, prev, last_t = float(self.fps), 0, None, 0.0
        for img, t in frames:
            while prev is not None and i / fps + 1e-6 < t:
                yield prev, i / fps
                i += 1
            prev, last_t = img, t
        if prev is not None:
            while i <= int(np.floor(last_t * fps + 1e-6)):
                yield prev, i / fps
                i += 1

    def _chunks(self, c, stream):
        frames = self._frames(c, stream)
        if self.fps:
            frames = self._resampled(frames)
        chunk, times, per_chunk = [], [], None
        for img, t in frames:
            if per_chunk is None:
                per_chunk = max(1, int(min(self.chunk_mb * 2**20, 2**62) // max(img.nbytes, 1)))
            chunk.append(img)
            times.append(t)
            if len(chunk) == per_chunk:
                yield np.stack(chunk), np.asarray(times, np.float64)
                chunk, times = [], []
        if chunk:
            yield np.stack(chunk), np.asarray(times, np.float64)


def decode(path: str | Path, fps: float | None = None, audio: bool = True, max_side: int | None = None,
           max_pixels: int | None = MAX_PIXELS) -> Video:
    """Decode a whole video file into upright RGB frames (+ timestamps) and 16 kHz mono audio
    (`FrameStream` decodes it chunk by chunk instead, in flat memory).

    ``fps``: None keeps the native frames; a number resamples in time (see the module docstring).
    ``max_side``: downscale frames so that their longer side is at most this (None: `MAX_SIDE`).
    ``max_pixels``: refuse frames of more pixels than this (`MAX_PIXELS`; None: no limit).
    A file without a video stream, or whose video stream has no decodable frame, gives T = 0 frames;
    the caller decides whether that is an error. Unreadable files raise `DecodeError` naming the file.
    """
    stream = FrameStream(path, fps, max_side, chunk_mb=float("inf"), max_pixels=max_pixels)
    chunks = list(stream)
    arr = np.concatenate([f for f, _ in chunks]) if chunks else np.zeros((0, 0, 0, 3), np.uint8)
    ts = np.concatenate([t for _, t in chunks]) if chunks else np.zeros(0, np.float64)
    wave = decode_audio(path) if audio else None  # a second pass over the file: simpler than demuxing both
    rate = float(fps) if fps else stream.nominal_fps
    return Video(str(path), arr, ts, rate, wave, int(stream.rotation), stream.codec, stream.promised_frames,
                 stream.damage, stream.decoded_frames)


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
