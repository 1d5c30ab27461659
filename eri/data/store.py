"""The feature store: one `.npz` per video per stream, written atomically, plus a per-stream index.

Layout (what extraction writes for real videos and what the synthetic generator imitates)::

    <root>/features/<stream>/meta.json   {"stream", "dim", "rate", "dtype", "extractor", "config_hash", ...}
                                         (an `eri.streams.StreamMeta`)
    <root>/features/<stream>/index.csv   File_ID, n_steps, n_valid  (one row per stored video)
    <root>/features/<stream>/<File_ID>.npz
        features   (T, D) float16 or float32
        valid      (T,)   bool    per-step validity (False: no face found in that frame)
        timestamps (T,)   float32 seconds from the start of the video

File ids are stored without the brackets of `data_info.csv` (``[00001]`` -> ``00001``).

A stream whose meta.json names a ``codec`` (face-crop images, `eri.data.crops`) is stored by that
codec instead: ``frames`` (+ ``offsets``) in place of ``features``; `CODECS` holds the codecs, which
register themselves on import (so this module never imports eri.features).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from eri.errors import InputError, StoreError
from eri.io import atomic_write_bytes, atomic_write_text, check_name, inside, name_problem
from eri.streams import FRAME, StreamMeta, read_stream_meta, write_stream_meta


class Streamed:
    """A uint8 ``.npy`` member of `_write_npz` of ``shape``, given as pieces of bytes (an iterable) instead of an
    array, so a large member (a long video's encoded face crops) goes to the file without ever being whole in memory."""

    def __init__(self, shape: tuple, pieces):
        self.shape, self.nbytes, self.pieces = tuple(int(n) for n in shape), int(np.prod(shape, dtype=np.int64)), pieces


def _write_npz(f, arrays: dict) -> None:
    """Like ``np.savez`` but byte-identical across runs (fixed zip timestamps), so the same
    inputs give the same files. A `Streamed` member is written piece by piece; the file is the one its
    whole array would give (same header, and the zip entry's size is known up front as ``writestr`` knows it)."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, arr in arrays.items():
            info, buf = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), io.BytesIO()
            if not isinstance(arr, Streamed):
                np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
                z.writestr(info, buf.getvalue())
                continue
            np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": arr.shape})
            info.file_size, done = buf.tell() + arr.nbytes, 0
            with z.open(info, "w") as out:
                out.write(buf.getvalue())
                for piece in arr.pieces:
                    out.write(piece)
                    done += len(piece)
            if done != arr.nbytes:
                raise StoreError(f"{name}.npy: {done} bytes written, {arr.nbytes} announced")


CODECS: dict = {}  # meta.json ``codec`` -> object with ``encode(meta, features, valid, timestamps) -> arrays``
# and ``writer(store, stream, vid)`` (the same file, chunk by chunk: `FeatureStore.writer`)


class FeatureStore:
    """Reads and writes the per-video arrays of one dataset root.

    Stream names and video ids become file names: both must be plain names, and every path is
    checked to lie inside ``<root>/features``. A file that cannot be read, or whose arrays do not
    agree with each other or with the stream's ``dim``, is a `StoreError` naming the file.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dir = self.root / "features"
        self._dims: dict[str, tuple[int, int]] = {}

    def path(self, stream: str, vid: str, suffix: str = ".npz") -> Path:
        """``<root>/features/<stream>/<vid><suffix>``, refused unless both are plain names."""
        try:
            check_name(stream, f"{self.dir}: stream name")
            check_name(vid, f"{self.dir / stream}: video id")
            return inside(self.dir, stream, f"{vid}{suffix}")
        except InputError as e:
            raise StoreError(str(e)) from None

    # ---------------------------------------------------------------- writing
    def write_meta(self, stream: str, meta: StreamMeta | dict) -> None:
        """``meta``: the descriptor, or its meta.json object."""
        meta = meta if isinstance(meta, StreamMeta) else StreamMeta.from_dict(meta, stream)
        if meta.extra.get("codec"):  # images: uint8 pixels whatever dtype the features would have had
            meta = meta.replace(dtype="uint8")
        if meta.name != stream:
            raise StoreError(f"{self.dir / stream}: a descriptor of stream '{meta.name}' cannot describe '{stream}'")
        write_stream_meta(self.path(stream, "meta", ".json").parent, meta)

    def write(self, stream: str, vid: str, features: np.ndarray, valid: np.ndarray, timestamps: np.ndarray,
              extra: dict[str, np.ndarray] | None = None) -> None:
        """``extra``: more arrays in the same file (extraction stores its ``config_hash``; readers ignore them)."""
        features = np.asarray(features)
        if features.ndim != 2:
            raise StoreError(f"{stream}/{vid}: features must be (T, D), got shape {features.shape}")
        n = len(features)
        if len(valid) != n or len(timestamps) != n:
            raise StoreError(f"{stream}/{vid}: features, valid and timestamps differ in length")
        arrays = {"features": features, "valid": np.asarray(valid, bool), "timestamps": np.asarray(timestamps, np.float32)}
        codec = self._codec(stream)
        if codec is not None:
            arrays = codec.encode(self.stream_meta(stream), features, arrays["valid"], arrays["timestamps"])
        arrays.update(extra or {})
        atomic_write_bytes(self.path(stream, vid), lambda f: _write_npz(f, arrays))

    def writer(self, stream: str, vid: str):
        """A writer that takes a codec stream's frames chunk by chunk (``add(idx, features)``, then ``commit(valid,
        timestamps, extra)`` or ``abort()``; a context manager that aborts unless committed) and writes the file
        `write` would write for the whole array, holding one chunk at a time; None for a stream without a codec
        (its steps are small: `write` them whole)."""
        codec = self._codec(stream)
        return codec.writer(self, stream, vid) if codec is not None and hasattr(codec, "writer") else None

    def _codec(self, stream: str):
        """The codec a stream's meta.json names (None: plain features); StoreError when it is not registered."""
        path = self.path(stream, "meta", ".json")
        name = self.stream_meta(stream).extra.get("codec") if path.exists() else None
        if name == "crops" and name not in CODECS:
            import eri.data.crops  # noqa: F401 (registers the face-crop codec)
        if name and name not in CODECS:
            raise StoreError(f"{path}: codec '{name}' is not registered")
        return CODECS.get(name) if name else None

    def write_index(self, stream: str, rows: list[dict] | pd.DataFrame) -> None:
        df = pd.DataFrame(rows, columns=["File_ID", "n_steps", "n_valid"])
        atomic_write_text(self.path(stream, "index", ".csv"), df.to_csv(index=False))

    # ---------------------------------------------------------------- reading
    def streams(self) -> list[str]:
        return sorted(p.parent.name for p in self.dir.glob("*/meta.json") if name_problem(p.parent.name) is None)

    def stream_meta(self, stream: str) -> StreamMeta:
        """The stream's descriptor; StoreError when its meta.json is missing (naming the streams here) or damaged."""
        path = self.path(stream, "meta", ".json")
        if not path.exists():
            have = ", ".join(self.streams()) or "none"
            raise StoreError(f"stream '{stream}' not found: {path} is missing (streams in this store: {have})")
        return read_stream_meta(path)

    def meta(self, stream: str) -> dict:
        """`stream_meta` as the meta.json object (what a model file's spec stores)."""
        return self.stream_meta(stream).to_dict()

    def _dim(self, stream: str) -> int:
        """The stream's width from meta.json (0: unknown or no meta.json yet), re-read when the file changes."""
        path = self.path(stream, "meta", ".json")
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0
        if self._dims.get(stream, (None,))[0] != stamp:
            self._dims[stream] = (stamp, self.stream_meta(stream).dim)
        return self._dims[stream][1]

    def index(self, stream: str) -> pd.DataFrame:
        path = self.path(stream, "index", ".csv")
        if not path.exists():
            raise StoreError(f"{path} is missing: the store for stream '{stream}' is incomplete")
        try:
            df = pd.read_csv(path, dtype={"File_ID": str})
        except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise StoreError(f"{path} is damaged ({type(e).__name__}: {e}); rebuild it with tools/extract.py --index-only") from None
        if "File_ID" not in df.columns:
            raise StoreError(f"{path} has no File_ID column; rebuild it with tools/extract.py --index-only")
        bad = [v for v in df["File_ID"] if name_problem(v) is not None]
        if bad:
            raise StoreError(f"{path}: bad id(s) {bad[:5]}: {name_problem(bad[0])}")
        return df

    def load(self, stream: str, vid: str, with_times: bool = False):
        """``(features float32 (T, D), valid bool (T,))`` for one video, plus ``timestamps`` (T,) float64
        with ``with_times``. Steps with a NaN or inf are flagged invalid (like frames without a face)."""
        path = self.path(stream, vid)
        if not path.exists():
            raise StoreError(f"{path} is missing (video {vid}, stream {stream})")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("features", "valid") if k not in z.files]
                if missing:
                    raise ValueError(f"no {' or '.join(missing)} array (has {z.files})")
                feats, valid = z["features"], z["valid"]
                times = z["timestamps"] if "timestamps" in z.files else None
        except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, zlib/OSError/ValueError: all "damaged"
            raise StoreError(f"{path} is damaged ({type(e).__name__}: {e})") from None
        dim = self._dim(stream)
        problem = _shape_problem(feats.shape, feats.dtype, valid.shape, None if times is None else times.shape, dim)
        if problem:
            raise StoreError(f"{path}: {problem}")
        feats, valid = feats.astype(np.float32), valid.astype(bool)
        bad = ~np.isfinite(feats).all(axis=1)
        if bad.any():
            # NaN/inf steps are treated like frames without a face: flagged invalid, never fed to a model.
            feats[bad] = 0.0
            valid = valid & ~bad
        if with_times:
            t = times.astype(np.float64) if times is not None else np.arange(len(feats), dtype=np.float64)
            return feats, valid, t
        return feats, valid


    def check_rate(self, stream: str, ids, sample: int = 3) -> None:
        """A StoreError naming meta.json and a file when the stream's ``rate`` disagrees with the
        timestamps of the first ``sample`` readable files of ``ids`` (a few reads, whatever the size)."""
        meta, seen = self.stream_meta(stream), 0
        for vid in ids:
            try:
                with np.load(self.path(stream, vid), allow_pickle=False) as z:
                    times = z["timestamps"] if "timestamps" in z.files else None
            except Exception:  # noqa: BLE001 - a damaged file is judged where it is loaded (data.bad_files)
                continue
            problem = None if times is None else rate_problem(meta, times)
            if problem:
                raise StoreError(f"{self.path(stream, 'meta', '.json')}: {problem} in {self.path(stream, vid)}; "
                                 "fix the stream's meta.json rate (\"frame\" for one step per video frame, else steps per second)")
            seen += times is not None and len(times) > 2
            if seen >= sample:
                return

    def inspect(self, stream: str, vid: str) -> dict:
        """``{"n_steps", "n_valid", "config_hash"}`` of one file without reading its features (only the
        array headers), checked like `load`: a damaged or misshapen file is a StoreError naming it."""
        path = self.path(stream, vid)
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                images = "frames.npy" in names and "features.npy" not in names  # a codec's file
                missing = [k for k in ("features", "valid") if f"{k}.npy" not in names and not (images and k == "features")]
                if missing:
                    raise ValueError(f"no {' or '.join(missing)} array")
                valid = _npy_read(z, "valid.npy")
                shape, dtype = ((len(valid), self._dim(stream)), np.dtype(np.uint8)) if images else _npy_header(z, "features.npy")
                times = _npy_header(z, "timestamps.npy")[0] if "timestamps.npy" in names else None
                stored = str(_npy_read(z, "config_hash.npy").reshape(-1)[0]) if "config_hash.npy" in names else None
        except FileNotFoundError:
            raise StoreError(f"{path} is missing (video {vid}, stream {stream})") from None
        except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, zlib/OSError/ValueError: all "damaged"
            raise StoreError(f"{path} is damaged ({type(e).__name__}: {e})") from None
        dim = self._dim(stream)
        problem = _shape_problem(shape, dtype, valid.shape, times, dim)
        if problem:
            raise StoreError(f"{path}: {problem}")
        return {"n_steps": int(shape[0]), "n_valid": int(np.asarray(valid, bool).sum()), "config_hash": stored}


def unlearned(stream: str, meta: StreamMeta | dict) -> str | None:
    """The warning for a stream extracted with random (unlearned) weights, from its descriptor or
    meta.json object (None: the weights were learned). Extraction prints it, training and prediction warn
    with it: numbers from such a model are real code paths on features that carry no learned information."""
    meta = meta if isinstance(meta, StreamMeta) else StreamMeta.from_dict(meta, stream)
    if not meta.random_init:
        return None
    net = "ResNet18" if "resnet18" in str(meta.extra.get("backbone", "")).lower() else f"'{meta.extractor}' network"
    return (f"stream '{stream}' was extracted with a randomly initialised {net}: its features carry no learned "
            "information; give the extractor `weights:`")


MIN_FRAME_RATE = 3.0  # steps/s: a "frame" stream slower than this is not video frames (audio tokens are ~2/s)
RATE_FACTOR = 1.5  # a stated rate this many times faster or slower than the timestamps' spacing is wrong


def rate_problem(meta: StreamMeta, times: np.ndarray) -> str | None:
    """Whether a stream's meta.json ``rate`` disagrees with one file's timestamps (None: agrees, or too
    few steps to tell). ``rate`` decides which streams the valid-frame minimum and ``frame_stride`` apply
    to, so a wrong one silently drops videos or thins the wrong stream."""
    steps = np.diff(np.asarray(times, np.float64))
    steps = steps[np.isfinite(steps) & (steps > 0)]
    if len(steps) < 2:
        return None
    spacing = float(np.median(steps))
    seen = 1.0 / spacing
    rate = meta.rate
    fps = meta.decode.get("fps") if meta.decode else None
    if rate == FRAME and not fps:
        if seen < MIN_FRAME_RATE:
            return (f"rate is 'frame', but its timestamps are {spacing:.3g} s apart ({seen:.3g} steps/s), slower than "
                    f"any video ({MIN_FRAME_RATE:g} frames/s at least)")
        return None
    want = fps if rate == FRAME else rate
    if isinstance(want, (int, float)) and not isinstance(want, bool) and want > 0:
        if max(seen / want, want / seen) > RATE_FACTOR:
            return f"rate is {want:g} steps/s, but its timestamps are {spacing:.3g} s apart ({seen:.3g} steps/s)"
    return None


def _npy_header(z: zipfile.ZipFile, name: str) -> tuple[tuple, np.dtype]:
    with z.open(name) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def _npy_read(z: zipfile.ZipFile, name: str) -> np.ndarray:
    with z.open(name) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _shape_problem(shape: tuple, dtype: np.dtype, valid_shape: tuple, times_shape: tuple | None, dim: int) -> str | None:
    """What is wrong with one video's arrays (given their shapes), or None."""
    if len(shape) != 2:
        return f"features has shape {shape}, expected (T, D)"
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        return f"features has dtype {dtype}, expected a float array"
    if dim and shape[1] != dim:
        return f"features has width {shape[1]}, but the stream's meta.json says dim {dim}"
    if tuple(valid_shape) != (shape[0],):
        return f"valid has shape {tuple(valid_shape)}, expected ({shape[0]},) like features"
    if times_shape is not None and tuple(times_shape) != (shape[0],):
        return f"timestamps has shape {tuple(times_shape)}, expected ({shape[0]},) like features"
    return None


class MuseFeatureDir:
    """MuSe 2022 organiser features, ``<root>/feats/<NAME>/<File_ID>.csv``, read like a FeatureStore.

    Each CSV has two meta columns (timestamp and segment/id) before the feature columns. Rows with a
    NaN (e.g. FAUs where no face was found) are flagged invalid. Reading CSV is slow: for more than a
    quick look, convert once with ``FeatureStore.write`` and train from the store.
    """

    META_COLUMNS = 2

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dir = self.root / "feats"
        self._paths: dict[str, dict[str, Path]] = {}
        self._metas: dict[str, dict] = {}

    def streams(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir() and name_problem(p.name) is None)

    def files(self, stream: str) -> dict[str, Path]:
        """``{File_ID: csv path}``; a file whose name is not a usable id is left out with a warning."""
        if stream in self._paths:
            return self._paths[stream]
        if name_problem(stream) is not None or not (self.dir / stream).is_dir():
            raise StoreError(f"stream '{stream}' not found in {self.dir} (streams here: {self.streams() or 'none'})")
        from eri.data.labels import normalise_id

        paths, bad = {}, []
        for p in sorted((self.dir / stream).glob("*.csv")):
            vid = normalise_id(p.stem)
            if name_problem(vid) or vid in paths:
                bad.append(p.name)
            else:
                paths[vid] = p
        if bad:
            warnings.warn(f"{self.dir / stream}: {len(bad)} file(s) with an unusable or repeated id left out: {bad[:5]}")
        self._paths[stream] = paths
        return paths

    def meta(self, stream: str) -> dict:
        return self.stream_meta(stream).to_dict()

    def stream_meta(self, stream: str) -> StreamMeta:
        if stream not in self._metas:
            files = self.files(stream)
            if not files:
                raise StoreError(f"{self.dir / stream} holds no CSV files")
            first = next(iter(files.values()))
            ncol = len(_read_csv(first, nrows=1).columns)
            self._metas[stream] = StreamMeta(stream, ncol - self.META_COLUMNS, FRAME, extractor="muse2022")
        return self._metas[stream]

    def index(self, stream: str) -> pd.DataFrame:
        return pd.DataFrame({"File_ID": list(self.files(stream))})

    def load(self, stream: str, vid: str, with_times: bool = False):
        path = self.files(stream).get(vid)
        if path is None:
            raise StoreError(f"{self.dir / stream}: no CSV for video {vid}")
        df = _read_csv(path)
        try:
            values = df.iloc[:, self.META_COLUMNS :].to_numpy(dtype=np.float32)
            times = pd.to_numeric(df.iloc[:, 0]).to_numpy(np.float64) * 1e-3
        except (ValueError, TypeError) as e:
            raise StoreError(f"{path}: non-numeric values ({e})") from None
        dim = self.stream_meta(stream).dim
        if values.shape[1] != dim:
            raise StoreError(f"{path}: {values.shape[1]} feature columns, but other files of '{stream}' have {dim}")
        valid = np.isfinite(values).all(axis=1)
        values[~valid] = 0.0
        return (values, valid, times) if with_times else (values, valid)


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise StoreError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def open_features(root: str | Path):
    """The feature source of a dataset root: the npz store if present, else MuSe ``feats/`` CSVs."""
    root = Path(root)
    if (root / "features").is_dir():
        return FeatureStore(root)
    if (root / "feats").is_dir():
        return MuseFeatureDir(root)
    raise StoreError(f"{root}: no feature store (features/) or MuSe 2022 feature folder (feats/) found: extract the "
                     f"features first (tools/extract.py --config configs/extract/<X>.yaml --data-root {root}; README, \"Your data\")")
