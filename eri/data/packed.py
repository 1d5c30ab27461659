"""A packed copy of a feature store for training at Hume-Reaction scale (``data.cache: memmap``).

Per stream, one contiguous array of every video's steps plus offsets, in the store's own dtype
(float16 stays float16), beside the store:

    <root>/features/<stream>/packed/features.npy  (sum of T, D)  the raw steps, non-finite steps zeroed
    <root>/features/<stream>/packed/valid.npy     (sum of T,)    validity (non-finite steps invalid)
    <root>/features/<stream>/packed/times.npy     (sum of T,)    float32 seconds
    <root>/features/<stream>/packed/index.json    ids, offsets, dim, dtype and the store's fingerprint

Built once (by the first process of a machine, `ensure_packed`), rebuilt when its sources change.
Sources are checked by content: index.json records each listed file's blake2b hash, taken from the
bytes packed, plus its size, mtime and ctime. A file whose stat is unchanged is trusted (ctime cannot
be set back by a user, so an edit that restores the size and mtime still shows); a file whose stat
changed is hashed again and the pack is rebuilt only when the content differs (a copied store is
hashed once, not repacked). The pack's own arrays are checked whenever it is opened: their exact
sizes, and a hash written when they were built. That hash covers the whole file up to 64 MiB and,
above, 64 blocks of 64 KiB spread over it (first and last included), so opening a multi-GB pack
costs a few MB of reads; damage confined between the sampled blocks is caught instead when a video
is read (the pack holds only finite values, so a non-finite one is a `StoreError` naming the pack).
A damaged pack is rebuilt by the next run (it is our own derived file). Folders and files follow the
umask, like every eri write, so another user can read a pack; one who cannot write it gets one line.

Reading is lazy: a video's rows are read with one positioned read (``os.pread``) per array, so they pass
through the page cache that every rank on the machine shares and never count towards a rank's
resident memory; only ``valid`` and the offsets (a byte and 8 bytes per step) stay in RAM. `load`
returns exactly what `FeatureStore.load` returns, so training batches are identical in both modes
(tested).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from eri.data.store import FeatureStore
from eri.errors import StoreError
from eri.io import _umask, atomic_write_json, stable_hash

ARRAYS = ("features", "valid", "times")
FULL_HASH_BYTES, SAMPLE_BLOCKS, SAMPLE_BYTES = 64 << 20, 64, 64 << 10  # the pack's own check (module docstring)


def _head(store: FeatureStore, stream: str) -> str:
    """A hash of the stream's meta.json and index.csv bytes."""
    d = store.dir / stream
    try:
        return hashlib.blake2b((d / "meta.json").read_bytes() + b"\0" + (d / "index.csv").read_bytes(),
                               digest_size=16).hexdigest()
    except OSError as e:
        raise StoreError(f"{d}: cannot read its meta.json or index.csv ({e})") from None


def _stat(path: Path) -> list | None:
    """What changes whenever a file's bytes are rewritten (None: missing)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _stats(store: FeatureStore, stream: str) -> dict[str, list | None]:
    return {vid: _stat(store.path(stream, vid)) for vid in store.index(stream)["File_ID"]}


def _content_hash(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable: {e}"


def fingerprint(store: FeatureStore, stream: str) -> str:
    """Changes whenever the stream's metadata, index or the content of any listed file changes (a
    missing file too). Hashes every file: `ensure_packed` avoids that when the stats are unchanged."""
    hashes = {vid: _content_hash(store.path(stream, vid)) for vid in store.index(stream)["File_ID"]}
    return _fingerprint(_head(store, stream), hashes)


def _fingerprint(head: str, hashes: dict[str, str]) -> str:
    return stable_hash([head, sorted(hashes.items())], "sha1")


def packed_dir(store: FeatureStore, stream: str) -> Path:
    return store.dir / stream / "packed"


def _digest(path: Path) -> dict:
    """``{"size", "hash"}`` of one of the pack's arrays: the whole file up to FULL_HASH_BYTES, above
    that SAMPLE_BLOCKS blocks spread evenly over it, first and last included."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= FULL_HASH_BYTES:
            h.update(f.read())
        else:
            for k in range(SAMPLE_BLOCKS):
                h.update(os.pread(f.fileno(), SAMPLE_BYTES, (size - SAMPLE_BYTES) * k // (SAMPLE_BLOCKS - 1)))
    return {"size": size, "hash": h.hexdigest()}


def _damage(folder: Path, info: dict) -> str | None:
    """What is wrong with the pack's own arrays (None: their sizes and hashes are as built)."""
    want = info.get("arrays")
    if not isinstance(want, dict) or set(want) != set(ARRAYS):
        return "index.json records no array sizes and hashes (written by an older eri)"
    for name in ARRAYS:
        path = folder / f"{name}.npy"
        try:
            got = _digest(path)
        except OSError as e:
            return f"{path.name} cannot be read ({type(e).__name__}: {e})"
        if got["size"] != want[name].get("size"):
            return f"{path.name} has {got['size']} bytes, {want[name].get('size')} when it was built"
        if got["hash"] != want[name].get("hash"):
            return f"{path.name} has other bytes than when it was built"
    return None


def _info(folder: Path) -> dict | None:
    try:
        info = json.loads((folder / "index.json").read_text())
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None  # missing or damaged: rebuilt


def _current(store: FeatureStore, stream: str, out: Path, refresh: bool) -> bool:
    """Whether the pack in ``out`` is intact and built from the store's current files. Files whose
    stat changed are hashed; with ``refresh`` (under the lock), equal content updates their stats."""
    info = _info(out)
    if info is None or info.get("head") != _head(store, stream) or _damage(out, info):
        return False
    stats, hashes, seen = _stats(store, stream), info.get("hashes") or {}, info.get("stats") or {}
    if set(stats) != set(hashes):
        return False
    changed = [vid for vid, st in stats.items() if seen.get(vid) != st]
    if not changed:
        return True
    if not refresh or any(_content_hash(store.path(stream, vid)) != hashes[vid] for vid in changed):
        return False
    info["stats"] = {**seen, **{vid: stats[vid] for vid in changed}}  # same bytes (e.g. a copied store)
    atomic_write_json(out / "index.json", info)
    return True


def ensure_packed(store: FeatureStore, stream: str, progress: bool = True) -> Path:
    """The packed copy of ``stream``, (re)built when missing, stale or damaged, by one process at a
    time (a file lock: other processes wait, then find it current). Written into a temporary folder
    renamed into place, so an interrupted build leaves nothing half-written."""
    out = packed_dir(store, stream)
    if _current(store, stream, out, refresh=False):
        return out
    try:
        with _locked(out.parent / "packed.lock"):
            if _current(store, stream, out, refresh=True):
                return out
            return _build(store, stream, out, progress)
    except PermissionError as e:
        raise StoreError(f"{out}: cannot build the packed copy of stream '{stream}' ({e.strerror}: {e.filename}): "
                         "this store is not writable by you; ask its owner to run once with data.cache=memmap, "
                         "or use data.cache=memory") from None


class _locked:
    """An exclusive ``flock`` on ``path``, opened read-only when another user's lock file is not writable."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        try:
            self.file = open(self.path, "a")
        except PermissionError:
            self.file = open(self.path)  # flock works on a read-only descriptor
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_):
        self.file.close()


def _build(store: FeatureStore, stream: str, out: Path, progress: bool) -> Path:
    ids = list(store.index(stream)["File_ID"])
    head = _head(store, stream)
    meta = store.stream_meta(stream)
    dim, dtype = meta.dim, np.dtype(meta.dtype or "float32")
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
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: another user could not read the pack
    total, stats, hashes = int(offsets[-1]), {}, {}
    try:
        with _NpyAppender(tmp / "features.npy", dtype, (total, dim)) as feats, \
                _NpyAppender(tmp / "valid.npy", np.bool_, (total,)) as valid, \
                _NpyAppender(tmp / "times.npy", np.float32, (total,)) as times:
            for k, vid in enumerate(tqdm(ids, desc=f"packing {stream}", disable=not progress, leave=False)):
                n, path = int(lengths[k]), store.path(stream, vid)
                stats[vid], hashes[vid] = _stat(path), _content_hash(path)  # before reading: a later edit shows
                f, v, t = np.zeros((n, dim), dtype), np.zeros(n, np.bool_), np.zeros(n, np.float32)  # damaged: zeros
                if vid not in damaged:
                    try:
                        f, v, t = store.load(stream, vid, with_times=True)  # non-finite steps: zeroed and invalid, as loaded
                    except StoreError as e:
                        damaged[vid] = str(e)
                if len(f) != n or _stat(path) != stats[vid]:
                    raise StoreError(f"{path} changed while it was being packed; rerun")
                feats.append(f), valid.append(v), times.append(t)
        arrays = {name: _digest(tmp / f"{name}.npy") for name in ARRAYS}
        atomic_write_json(tmp / "index.json", {
            "fingerprint": _fingerprint(head, hashes), "head": head, "hashes": hashes, "stats": stats,
            "arrays": arrays, "ids": ids, "offsets": offsets.tolist(), "dim": dim, "dtype": dtype.name,
            "stream": stream, "damaged": damaged})
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; left over only after an error
    return out


class PackedStream:
    """One packed stream, read a video at a time with positioned reads."""

    def __init__(self, folder: Path):
        info = _info(folder)
        problem = "index.json is missing or damaged" if info is None else _damage(folder, info)
        if problem:
            raise StoreError(f"{folder}: the packed copy is damaged ({problem}); the next run rebuilds it")
        self.folder = folder
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
        if len(buf) != (b - a) * size:
            raise StoreError(f"{self.paths[name]}: the packed copy is truncated; the next run rebuilds it")
        return np.frombuffer(buf, dtype).reshape((b - a, width) if width else (b - a,))

    def _rows(self, vid: str) -> tuple[int, int]:
        """The video's steps ``a:b`` in the packed arrays; StoreError for a damaged or unlisted video."""
        k = self.row.get(vid)
        if k is None or vid in self.damaged:
            raise StoreError(self.damaged.get(vid) or f"video {vid} is not in the packed store")
        return int(self.offsets[k]), int(self.offsets[k + 1])

    def valid_steps(self, vid: str) -> np.ndarray:
        """The video's validity flags (T,), from memory: enough to judge it without reading a feature."""
        a, b = self._rows(vid)
        return self.valid[a:b]

    def load(self, vid: str, with_times: bool = False):
        a, b = self._rows(vid)
        feats = self._read("features", a, b, self.dim, self.dtype).astype(np.float32)
        if not np.isfinite(feats).all():  # packed steps are finite by construction: these bytes were damaged
            raise StoreError(f"{self.paths['features']}: the packed copy is damaged (non-finite values for video "
                             f"{vid}); the next run rebuilds it")
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
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
            return f.tell()
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: the packed copy is damaged ({type(e).__name__}: {e}); the next run rebuilds it") from None


class PackedStore:
    """The packed copies of a store's streams, read like a `FeatureStore` (``load(stream, vid)``)."""

    def __init__(self, store: FeatureStore, streams: list[str]):
        self.store = store
        self.streams = {s: PackedStream(packed_dir(store, s)) for s in streams}

    def meta(self, stream: str) -> dict:
        return self.store.meta(stream)

    def stream_meta(self, stream: str):
        return self.store.stream_meta(stream)

    def index(self, stream: str):
        return self.store.index(stream)

    def load(self, stream: str, vid: str, with_times: bool = False):
        return self.streams[stream].load(vid, with_times)

    def valid_steps(self, stream: str, vid: str) -> np.ndarray:
        """One video's validity flags (T,) without reading its features (the input rule needs only these,
        `eri.data.dataset.select_steps`); StoreError, with the file's problem, for a damaged video."""
        return self.streams[stream].valid_steps(vid)
