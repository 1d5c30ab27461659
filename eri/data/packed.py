"""A packed copy of a feature store for training at Hume-Reaction scale (``data.cache: memmap``).

Per stream, one contiguous array of every video's steps plus offsets, in the store's own dtype
(float16 stays float16), beside the store:

    <root>/features/<stream>/packed/features.npy  (sum of T, D)  the raw steps, non-finite steps zeroed
    <root>/features/<stream>/packed/valid.npy     (sum of T,)    validity (non-finite steps invalid)
    <root>/features/<stream>/packed/times.npy     (sum of T,)    float32 seconds
    <root>/features/<stream>/packed/index.json    ids, offsets, dim, dtype and the store's fingerprint

Built once (by the first process of a machine, `ensure_packed`), rebuilt when the store's
fingerprint changes (its meta.json, index.csv, and every listed file's size and mtime). Reading is
lazy: a video's rows are read with one positioned read (``os.pread``) per array, so they pass
through the page cache that every rank on the machine shares and never count towards a rank's
resident memory; only ``valid`` and the offsets (a byte and 8 bytes per step) stay in RAM. `load`
returns exactly what `FeatureStore.load` returns, so training batches are identical in both modes
(tested).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from eri.data.store import FeatureStore
from eri.errors import StoreError
from eri.io import atomic_write_json, stable_hash

ARRAYS = ("features", "valid", "times")


def fingerprint(store: FeatureStore, stream: str) -> str:
    """Changes whenever the stream's metadata, index or any listed file changes (a missing file too)."""
    d = store.dir / stream
    try:
        parts = [(d / "meta.json").read_bytes().hex(), (d / "index.csv").read_bytes().hex()]
    except OSError as e:
        raise StoreError(f"{d}: cannot read its meta.json or index.csv ({e})") from None
    for vid in store.index(stream)["File_ID"]:
        try:
            st = store.path(stream, vid).stat()
            parts.append(f"{vid}:{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            parts.append(f"{vid}:missing")
    return stable_hash(parts, "sha1")


def packed_dir(store: FeatureStore, stream: str) -> Path:
    return store.dir / stream / "packed"


def _current(info: Path, want: str) -> bool:
    try:
        return info.is_file() and json.loads(info.read_text()).get("fingerprint") == want
    except (OSError, ValueError):
        return False  # damaged: rebuilt


def ensure_packed(store: FeatureStore, stream: str, progress: bool = True) -> Path:
    """The packed copy of ``stream``, (re)built when missing or stale, by one process at a time (a file
    lock: other processes wait, then find it current). Written into a temporary folder renamed into
    place, so an interrupted build leaves nothing half-written."""
    out = packed_dir(store, stream)
    want = fingerprint(store, stream)
    if _current(out / "index.json", want):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "packed.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _current(out / "index.json", want):
            return out
        return _build(store, stream, out, want, progress)


def _build(store: FeatureStore, stream: str, out: Path, want: str, progress: bool) -> Path:
    ids = list(store.index(stream)["File_ID"])
    dim = int(store.meta(stream).get("dim") or 0)
    dtype = np.dtype(store.meta(stream).get("dtype") or "float32")
    damaged, lengths = {}, []
    for vid in ids:  # a damaged file is recorded, packed empty, and judged by the data module (data.bad_files)
        try:
            lengths.append(store.inspect(stream, vid)["n_steps"])
        except StoreError as e:
            damaged[vid] = str(e)
            lengths.append(0)
    lengths = np.asarray(lengths, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tmp = Path(tempfile.mkdtemp(prefix=".packed.", dir=out.parent))
    total = int(offsets[-1])
    with _NpyAppender(tmp / "features.npy", dtype, (total, dim)) as feats, \
            _NpyAppender(tmp / "valid.npy", np.bool_, (total,)) as valid, \
            _NpyAppender(tmp / "times.npy", np.float32, (total,)) as times:
        for k, vid in enumerate(tqdm(ids, desc=f"packing {stream}", disable=not progress, leave=False)):
            n = int(lengths[k])
            f, v, t = np.zeros((n, dim), dtype), np.zeros(n, np.bool_), np.zeros(n, np.float32)  # damaged: zeros
            if vid not in damaged:
                try:
                    f, v, t = store.load(stream, vid, with_times=True)  # non-finite steps: zeroed and invalid, as loaded
                except StoreError as e:
                    damaged[vid] = str(e)
            if len(f) != n:
                raise StoreError(f"{store.path(stream, vid)} changed while it was being packed; rerun")
            feats.append(f), valid.append(v), times.append(t)
    atomic_write_json(tmp / "index.json", {"fingerprint": want, "ids": ids, "offsets": offsets.tolist(),
                                           "dim": dim, "dtype": dtype.name, "stream": stream, "damaged": damaged})
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


class PackedStream:
    """One packed stream, read a video at a time with positioned reads."""

    def __init__(self, folder: Path):
        try:
            info = json.loads((folder / "index.json").read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{folder}: no usable packed copy ({type(e).__name__}: {e}); it is rebuilt by prepare_data") from None
        self.row = {vid: k for k, vid in enumerate(info["ids"])}
        self.fingerprint, self.damaged = info["fingerprint"], info.get("damaged", {})
        self.offsets = np.asarray(info["offsets"], np.int64)
        self.dim, self.dtype = int(info["dim"]), np.dtype(info["dtype"])
        self.valid = np.load(folder / "valid.npy")  # a byte per step: kept in RAM
        self.paths = {name: folder / f"{name}.npy" for name in ("features", "times")}
        self.data_start = {name: _data_offset(p) for name, p in self.paths.items()}
        # opened now: a rebuild during a run unlinks these files but cannot change what they read
        # (pread does not move a shared offset, so DataLoader workers may share the descriptors)
        self.fds = {name: os.open(p, os.O_RDONLY) for name, p in self.paths.items()}

    def __del__(self):
        for fd in getattr(self, "fds", {}).values():
            os.close(fd)

    def _read(self, name: str, a: int, b: int, width: int | None, dtype: np.dtype) -> np.ndarray:
        """Rows ``a:b`` of one array: (b - a, width), or (b - a,) when ``width`` is None."""
        size = dtype.itemsize * (width or 1)
        buf = os.pread(self.fds[name], (b - a) * size, self.data_start[name] + a * size)
        return np.frombuffer(buf, dtype).reshape((b - a, width) if width else (b - a,))

    def load(self, vid: str, with_times: bool = False):
        k = self.row.get(vid)
        if k is None or vid in self.damaged:
            raise StoreError(self.damaged.get(vid) or f"video {vid} is not in the packed store")
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        feats = self._read("features", a, b, self.dim, self.dtype).astype(np.float32)
        valid = self.valid[a:b].copy()
        if not with_times:
            return feats, valid
        return feats, valid, self._read("times", a, b, None, np.dtype(np.float32)).astype(np.float64)


class _NpyAppender:
    """Writes a ``.npy`` file of a known shape by appending rows in order with plain writes, so
    building a packed copy keeps no dirty memory-mapped pages in the builder's RSS (a memmap did: 9.3 GB
    peak for `hume-full`'s streams)."""

    def __init__(self, path: Path, dtype, shape: tuple):
        self.path, self.dtype, self.shape, self.rows = path, np.dtype(dtype), shape, 0
        self.file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                          "fortran_order": False, "shape": shape})

    def append(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
        self.rows += len(rows)

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        self.file.close()
        if kind is None and self.rows != self.shape[0]:
            raise StoreError(f"{self.path}: wrote {self.rows} of {self.shape[0]} rows")


def _data_offset(path: Path) -> int:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
        return f.tell()


class PackedStore:
    """The packed copies of a store's streams, read like a `FeatureStore` (``load(stream, vid)``)."""

    def __init__(self, store: FeatureStore, streams: list[str]):
        self.store = store
        self.streams = {s: PackedStream(packed_dir(store, s)) for s in streams}

    def meta(self, stream: str) -> dict:
        return self.store.meta(stream)

    def index(self, stream: str):
        return self.store.index(stream)

    def load(self, stream: str, vid: str, with_times: bool = False):
        return self.streams[stream].load(vid, with_times)
