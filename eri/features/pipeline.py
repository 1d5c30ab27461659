"""The extraction job: a folder of videos -> the feature store that training reads.

Per video: decode once (`eri.features.video`), detect + align faces once (`eri.features.faces`) when a
``face`` extractor needs them, run every extractor on its input, write one ``.npz`` per stream
(`eri.data.store.FeatureStore`, atomic). Then each stream's ``index.csv`` is rebuilt from the files
whose config hash is current.

- Datasets: ``abaw5`` (data_info.csv), ``muse2022`` (labels.csv + partition.csv) or ``folder`` (every
  video under the root, ids from file names); ``auto`` picks by the files present. Media are found
  anywhere under ``videos_dir`` (default: the root) by id: ``00001.mp4``, ``[00001].webm``, ``1.mov``.
  A ``<id>.wav`` beside them is used as the audio when the video has none (ABAW5 ships audio apart).
- Config hash: each stream's hash covers its extractor's name and config plus everything upstream that
  changes its numbers (decode and face settings for ``face`` extractors, dtype); it is stored in
  meta.json and inside every ``.npz``. A video is skipped when its file holds the current hash; a file
  with another hash is recomputed (never reused), and deleted if this run fails on that video, so
  training cannot read it. ``device`` and ``batch_size`` keys are left out of the hash (they do not
  change the numbers beyond float rounding).
- Shards: ``shard=(k, n)`` takes every n-th video starting at k (0-based) of the sorted id list; shards
  share nothing but the store. Each writes ``extraction_report[.shard-k-of-n].csv``; the index is
  rebuilt by every shard when it ends (the last one sees all files), or with ``index_only``.
- Robustness: an error in one video is recorded (File_ID, stream, stage, error, failed) and the job
  goes on; ``failed`` is False for facts about the data that training handles (no face, no audio
  track) and True for errors (unreadable file, zero frames, an extractor crash). Ctrl-C stops after
  writing the report and the index; rerunning resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from eri.config import ConfigError, load_structured, rule
from eri.data.labels import LabelError, normalise_id, read_label_ids, read_manifest
from eri.data.store import FeatureStore
from eri.errors import InputError, StoreError
from eri.io import atomic_write_text, check_name, name_problem
from eri.features.base import config_hash
from eri.features.extractors import build_extractor, extractor_class
from eri.registry import config_keys

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
NON_NUMERIC = ("device", "batch_size")  # config keys that do not change the numbers: not hashed
REPORT_COLUMNS = ["File_ID", "stream", "stage", "error", "failed"]
RERUN_STAGES = ("find", "labels", "index")  # report rows every run derives afresh


@dataclass
class DecodeConfig:
    fps: Optional[float] = rule(None, gt=0)  # None: native frames (VFR kept); a number: resample onto that rate
    max_side: Optional[int] = rule(None, ge=16)  # downscale frames on decode so the longer side is at most this


@dataclass
class FaceConfig:
    crop_size: int = rule(224, ge=16)  # aligned crop side (224 for ResNet18)
    min_face_size: int = rule(40, ge=1)
    thresholds: list = field(default_factory=lambda: [0.6, 0.7, 0.7])
    min_prob: float = rule(0.9, ge=0, le=1)
    center_weight: float = rule(0.5, ge=0)
    every_k: int = rule(1, ge=1)  # detect on every k-th frame, interpolate between (1: every frame)
    detect_scale: float = rule(1.0, gt=0, le=1)  # downscale factor for detection (<1 is faster)
    max_jump: float = rule(0.25, gt=0)
    batch_size: int = rule(32, ge=1)  # frames per MTCNN call and per alignment/extractor chunk


@dataclass
class ExtractConfig:
    layout: str = rule("auto", choices=("auto", "abaw5", "muse2022", "folder"))
    videos_dir: Optional[str] = None  # where media are searched (relative to the data root); default: the root
    out: Optional[str] = None  # store root; default: the data root (training reads data_info.csv + features/ there)
    device: str = "cpu"  # cpu | cuda | auto: default for MTCNN and every extractor that takes a device
    dtype: str = rule("float16", choices=("float16", "float32"))  # per stream: extractors[i].dtype
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    faces: FaceConfig = field(default_factory=FaceConfig)
    extractors: list = field(default_factory=list)  # [{name, stream?, dtype?, config: {...}}]


STREAM_KEYS = ("name", "stream", "dtype", "config")


def load_extract_config(path: str | Path | None = None, overrides: list[str] = ()) -> Any:
    """Schema <- YAML <- ``key=value`` overrides; unknown keys are errors listing the valid ones."""
    cfg = load_structured(ExtractConfig, path, overrides)
    if not cfg.extractors:
        raise ConfigError(f"{path}: `extractors` is empty: name at least one (e.g. - {{name: holistic}})")
    for i, spec in enumerate(cfg.extractors):
        unknown = sorted(set(spec) - set(STREAM_KEYS))
        if unknown or "name" not in spec:
            raise ConfigError(
                f"{path}: extractors[{i}]: unknown key(s) {unknown} or no name; valid keys: {list(STREAM_KEYS)}"
            )
    return cfg


# ----------------------------------------------------------------------------- dataset listing
def find_media(folder: Path) -> tuple[dict[str, Path], dict[str, Path], list[dict]]:
    """Videos and ``.wav`` files under ``folder`` by normalised id, and the report rows of files left
    out: a name that is not a usable id, or an id with two files (neither is used: which is meant?)."""
    found: dict[str, dict[str, list[Path]]] = {"video": {}, "wav": {}}
    problems: list[dict] = []
    for p in sorted(folder.rglob("*")):
        ext = p.suffix.lower()
        if p.name.startswith(".") or not p.is_file() or (ext not in VIDEO_EXTS and ext != ".wav"):
            continue
        if "features" in p.relative_to(folder).parts[:1]:
            continue
        vid = normalise_id(p.stem)
        problem = name_problem(vid)
        if problem:
            problems.append(_row(repr(p.stem), "*", "find", f"{p}: file name is not a usable id ({problem})"))
        else:
            found["wav" if ext == ".wav" else "video"].setdefault(vid, []).append(p)
    media: dict[str, dict[str, Path]] = {"video": {}, "wav": {}}
    for kind, by_id in found.items():
        for vid, paths in by_id.items():
            if len(paths) == 1:
                media[kind][vid] = paths[0]
            else:
                problems.append(_row(vid, "*", "find", f"{len(paths)} {kind} files for id {vid}: {', '.join(map(str, paths))}"))
    return media["video"], media["wav"], problems


def _row(vid: str, stream: str, stage: str, error: str, failed: bool = True) -> dict:
    return {"File_ID": vid, "stream": stream, "stage": stage, "error": error, "failed": failed}


def list_videos(root: str | Path, layout: str = "auto", videos_dir: str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """The videos of a dataset: ``File_ID``, ``path`` (None when no file), ``wav`` (None), in id order,
    and report rows for what was left out. A label file with bad labels is a warning here (extraction
    needs ids, not labels); ids that are not plain file names are left out and reported."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--data-root: {root} does not exist or is not a folder")
    media_dir = root / videos_dir if videos_dir else root
    if not media_dir.is_dir():
        raise ConfigError(f"videos_dir: {media_dir} does not exist or is not a folder")
    videos, wavs, problems = find_media(media_dir)
    if layout == "auto":
        layout = (
            "abaw5" if (root / "data_info.csv").exists() else "muse2022" if (root / "labels.csv").exists() else "folder"
        )
    if layout == "folder":
        ids = sorted(videos)
        if not ids and not problems:
            raise InputError(f"{media_dir}: no video files ({', '.join(VIDEO_EXTS)}) found")
    else:
        try:
            ids = sorted(read_manifest(root, layout)["File_ID"])
        except LabelError as e:
            tqdm.write(f"warning: {e}; extracting the ids it lists anyway (training will refuse it until it is fixed)")
            ids, bad = read_label_ids(root, layout)
            problems += [_row("?", "*", "labels", msg) for msg in bad]
            ids = sorted(ids)
    table = pd.DataFrame({"File_ID": ids, "path": [videos.get(i) for i in ids], "wav": [wavs.get(i) for i in ids]})
    return table, problems


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"k/n"`` (0 <= k < n) -> (k, n); None -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        k, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like K/N with 0 <= K < N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise ConfigError(f"--shard {text}: need 0 <= K < N (K is 0-based)")
    return k, n


# ----------------------------------------------------------------------------- streams
@dataclass
class Stream:
    name: str  # stream (folder) name in the store
    extractor: Any
    dtype: str
    hash: str
    spec: dict


def stream_hash(spec: dict, cfg, kind: str) -> str:
    own = {k: v for k, v in dict(spec.get("config") or {}).items() if k not in NON_NUMERIC}
    upstream: dict = {"dtype": spec.get("dtype") or cfg.dtype}
    if kind == "face":
        faces = {k: v for k, v in OmegaConf.to_container(cfg.faces).items() if k not in NON_NUMERIC}
        upstream.update(decode=OmegaConf.to_container(cfg.decode), faces=faces)
    return config_hash(spec["name"], {"config": own, **upstream})


def build_streams(cfg, load: bool = True) -> list[Stream]:
    """The configured streams; ``load=False`` names and hashes them without building the extractors
    (no weights are read: enough to rebuild indexes)."""
    streams, seen = [], set()
    for spec in cfg.extractors:
        spec = OmegaConf.to_container(spec) if not isinstance(spec, dict) else dict(spec)
        name = spec["name"]
        cls = extractor_class(name)
        conf = dict(spec.get("config") or {})
        if "device" in config_keys(cls) and "device" not in conf:
            conf["device"] = cfg.device
        ext = build_extractor(name, conf) if load else None
        stream = spec.get("stream") or name
        try:
            check_name(stream, f"extractor '{name}': stream")
        except InputError as e:
            raise ConfigError(str(e)) from None
        if stream in seen:
            raise ConfigError(f"two extractors write stream '{stream}': give one a different `stream:` name")
        seen.add(stream)
        dtype = spec.get("dtype") or cfg.dtype
        if dtype not in ("float16", "float32"):
            raise ConfigError(f"extractor '{name}': dtype must be float16 or float32, got {dtype}")
        streams.append(Stream(stream, ext, dtype, stream_hash(spec, cfg, cls.kind), spec))
    return streams


def _rate(ext) -> float | str:
    """The store's ``rate``: "frame" for per-frame streams, else steps per second."""
    if ext.kind != "audio":
        return "frame"
    if ext.steps_per_second:
        return float(ext.steps_per_second)
    if hasattr(ext, "hop") and hasattr(ext, "k"):  # MFCC tokens: sample rate / hop / frames per token
        return 16000 / ext.hop / ext.k
    if getattr(ext, "config", {}).get("rate"):
        return float(ext.config["rate"])
    if hasattr(ext, "frame_rate"):
        return float(ext.frame_rate)
    return "token"


def _stored_hash(store: FeatureStore, stream: str, vid: str) -> str | None:
    """The config hash inside a stored file; None when it has none or is damaged (so it is recomputed)."""
    try:
        return store.inspect(stream, vid)["config_hash"]
    except StoreError:
        return None


def rebuild_index(store: FeatureStore, stream: str, current_hash: str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """``index.csv`` of a stream from its ``.npz`` files whose hash is current, and a report row for
    each file that is damaged or misshapen (left out of the index, so training never reads it)."""
    meta = store.meta(stream)
    want = current_hash or meta.get("config_hash")
    rows, damaged = [], []
    for p in sorted((store.dir / stream).glob("*.npz")):
        if name_problem(p.stem):
            damaged.append(_row(repr(p.stem), stream, "index", f"{p}: file name is not a usable id"))
            continue
        try:
            info = store.inspect(stream, p.stem)
        except StoreError as e:
            damaged.append(_row(p.stem, stream, "index", str(e)))
            continue
        if want is not None and info["config_hash"] != want:
            continue  # stale (or of unknown origin): never listed, so never read by training
        rows.append({"File_ID": p.stem, "n_steps": info["n_steps"], "n_valid": info["n_valid"]})
    store.write_index(stream, rows)
    return pd.DataFrame(rows, columns=["File_ID", "n_steps", "n_valid"]), damaged


# ----------------------------------------------------------------------------- per video
class VideoError(RuntimeError):
    def __init__(self, stage: str, message: str, failed: bool = True):
        super().__init__(message)
        self.stage, self.failed = stage, failed


class Extraction:
    """Runs the configured extractors over a dataset root and writes the store (see module docstring)."""

    def __init__(self, cfg, data_root: str | Path, progress: bool = True, load: bool = True):
        """``load=False``: streams without extractors, for `rebuild_indexes` alone."""
        self.cfg = cfg
        self.root = Path(data_root)
        self.out = Path(cfg.out) if cfg.out else self.root
        self.store = FeatureStore(self.out)
        self.streams = build_streams(cfg, load)
        self.progress = progress
        self._detector = None
        self.report: list[dict] = []
        self.processed: dict[str, set[str]] = {}  # video -> streams this run computed (their old report rows go)
        self.stats = {"videos": 0, "skipped": 0, "frames": 0, "seconds": 0.0, "stale": 0}

    @property
    def detector(self):
        if self._detector is None:
            from eri.features.faces import FaceDetector

            fc = OmegaConf.to_container(self.cfg.faces)
            fc.pop("crop_size")
            self._detector = FaceDetector(**fc, device=self.cfg.device)
        return self._detector

    # -- meta
    def write_meta(self) -> None:
        for s in self.streams:
            old = self.store.dir / s.name / "meta.json"
            if old.exists():
                prev = json.loads(old.read_text()).get("config_hash")
                if prev != s.hash:
                    tqdm.write(
                        f"stream '{s.name}': config changed ({prev} -> {s.hash}); stored files with the old "
                        "hash will be recomputed, never reused"
                    )
            rate = _rate(s.extractor)
            meta = {
                "stream": s.name,
                "dim": int(s.extractor.dim),
                "rate": rate,
                "dtype": s.dtype,
                "extractor": s.spec["name"],
                "config_hash": s.hash,
                "config": {k: v for k, v in (s.spec.get("config") or {}).items()},
                **(
                    {"faces": OmegaConf.to_container(self.cfg.faces), "decode": OmegaConf.to_container(self.cfg.decode)}
                    if s.extractor.kind == "face"
                    else {}
                ),
                **s.extractor.metadata(),
            }
            if s.extractor.kind == "file" and not s.extractor.dim and old.exists():
                meta["dim"] = json.loads(old.read_text()).get("dim", 0)
            self.store.write_meta(s.name, meta)

    def todo(self, vid: str) -> list[Stream]:
        """Streams of ``vid`` to compute: missing, or stored with another hash, or damaged."""
        out = []
        for s in self.streams:
            if self.store.path(s.name, vid).exists():
                if _stored_hash(self.store, s.name, vid) == s.hash:
                    continue
                self.stats["stale"] += 1
            out.append(s)
        return out

    def _note(self, vid: str, stream: str, stage: str, error: str, failed: bool) -> None:
        self.report.append(_row(vid, stream, stage, error, failed))

    def _write(self, s: Stream, vid: str, feats, valid, ts) -> None:
        feats = np.asarray(feats, np.float32)
        if feats.ndim != 2 or (s.extractor.dim and feats.shape[1] != s.extractor.dim):
            raise VideoError(
                s.name, f"extractor '{s.spec['name']}' returned shape {feats.shape}, expected (T, {s.extractor.dim})"
            )
        self.store.write(
            s.name,
            vid,
            feats.astype(s.dtype),
            np.asarray(valid, bool),
            np.asarray(ts, np.float32),
            extra={"config_hash": np.array([s.hash])},
        )

    def _drop_stale(self, s: Stream, vid: str) -> None:
        p = self.store.path(s.name, vid)
        if p.exists() and _stored_hash(self.store, s.name, vid) != s.hash:
            p.unlink()

    def process(self, vid: str, path: Path | None, wav: Path | None, streams: list[Stream]) -> int:
        """Extract ``streams`` for one video; returns the number of frames decoded. Errors are noted.

        A file that cannot be decoded fails every stream that needs it; a broken audio track fails the
        audio streams only, zero video frames the face streams only."""
        from eri.features.video import DecodeError, decode, decode_audio

        file_streams = [s for s in streams if s.extractor.kind == "file"]
        media_streams = [s for s in streams if s.extractor.kind != "file"]
        for s in file_streams:
            try:
                self._write(s, vid, *s.extractor(vid, self.root))
            except Exception as e:  # noqa: BLE001 - one bad file never stops the job
                self._drop_stale(s, vid)
                self._note(vid, s.name, "file", f"{type(e).__name__}: {e}", True)
        if not media_streams:
            return 0
        path = path if isinstance(path, Path) else None
        wav = wav if isinstance(wav, Path) else None
        if path is None:
            for s in media_streams:
                self._drop_stale(s, vid)
            self._note(vid, ",".join(s.name for s in media_streams), "find", "no video file for this id", True)
            return 0
        face_streams = [s for s in media_streams if s.extractor.kind == "face"]
        audio_streams = [s for s in media_streams if s.extractor.kind == "audio"]
        n_frames = 0
        if face_streams:  # frames are decoded only when a face stream needs them
            try:
                video = decode(path, fps=self.cfg.decode.fps, audio=False, max_side=self.cfg.decode.max_side)
                if video.n_frames == 0:
                    raise DecodeError(f"{path}: no video frames")
            except Exception as e:  # noqa: BLE001 - DecodeError, or anything else a broken file provokes
                for s in face_streams:
                    self._drop_stale(s, vid)
                msg = str(e) if isinstance(e, DecodeError) else f"{path}: {type(e).__name__}: {e}"
                self._note(vid, ",".join(s.name for s in face_streams), "decode", msg, True)
            else:
                n_frames = video.n_frames
                partial = video.partial()
                if partial:  # the frames before the damage are used; the report says how many of how many
                    self._note(vid, ",".join(s.name for s in face_streams), "decode", partial, False)
                try:
                    self._faces(vid, video, face_streams)
                except Exception as e:  # noqa: BLE001
                    for s in face_streams:
                        self._drop_stale(s, vid)
                    self._note(vid, ",".join(s.name for s in face_streams), "faces", f"{type(e).__name__}: {e}", True)
                del video
        if audio_streams:
            wave = None
            try:  # a broken audio track fails the audio streams only
                wave = decode_audio(path)
                if wave is None and wav is not None:
                    wave = decode_audio(wav)
            except Exception as e:  # noqa: BLE001
                for s in audio_streams:
                    self._drop_stale(s, vid)
                msg = str(e) if isinstance(e, DecodeError) else f"{path}: {type(e).__name__}: {e}"
                self._note(vid, ",".join(s.name for s in audio_streams), "decode", msg, True)
                return n_frames
            for s in audio_streams:
                try:
                    if wave is None or len(wave) == 0:
                        # recorded, not a failure: an empty stream lets training treat the video as invalid
                        self._note(vid, s.name, "audio", f"{path}: no audio track", False)
                        self._write(s, vid, np.zeros((0, s.extractor.dim), np.float32), np.zeros(0, bool), np.zeros(0))
                        continue
                    feats, ts = s.extractor(wave)
                    self._write(s, vid, feats, np.ones(len(feats), bool), ts)
                except Exception as e:  # noqa: BLE001
                    self._drop_stale(s, vid)
                    self._note(vid, s.name, "extract", f"{type(e).__name__}: {e}", True)
        return n_frames

    def _faces(self, vid: str, video, streams: list[Stream]) -> None:
        from eri.features.faces import align_faces

        try:
            track = self.detector(video.frames)
        except Exception as e:  # noqa: BLE001
            for s in streams:
                self._drop_stale(s, vid)
            self._note(vid, ",".join(s.name for s in streams), "faces", f"{type(e).__name__}: {e}", True)
            return
        valid = track.valid
        idx = np.flatnonzero(valid)
        if len(idx) == 0:
            names = ",".join(s.name for s in streams)
            self._note(vid, names, "faces", f"no face in any of {video.n_frames} frames", False)
        feats = {s.name: np.zeros((video.n_frames, s.extractor.dim), np.float32) for s in streams}
        failed: dict[str, str] = {}
        bs = int(self.cfg.faces.batch_size)
        size = int(self.cfg.faces.crop_size)
        for start in range(0, len(idx), bs):  # align a chunk once, feed it to every face extractor
            chunk = idx[start : start + bs]
            crops = align_faces(
                video.frames[chunk], track.landmarks[chunk], size, device=self.detector.device, as_tensor=True
            )
            for s in streams:
                if s.name in failed:
                    continue
                try:
                    out = s.extractor(crops)
                    feats[s.name][chunk] = out.cpu().numpy() if torch.is_tensor(out) else out
                except Exception as e:  # noqa: BLE001
                    failed[s.name] = f"{type(e).__name__}: {e}"
        for s in streams:
            if s.name in failed:
                self._drop_stale(s, vid)
                self._note(vid, s.name, "extract", failed[s.name], True)
            else:
                try:
                    self._write(s, vid, feats[s.name], valid, video.timestamps)
                except VideoError as e:
                    self._note(vid, s.name, e.stage, str(e), True)

    # -- the job
    def run(self, shard: tuple[int, int] = (0, 1), limit: int | None = None) -> dict:
        videos, listing = list_videos(self.root, self.cfg.layout, self.cfg.videos_dir)
        k, n = shard
        videos = videos.iloc[k::n]
        if limit:
            videos = videos.iloc[:limit]
        if k == 0:
            self.report += listing  # the same for every shard: reported once
        self._copy_labels()
        self.write_meta()
        t0 = time.perf_counter()
        bar = tqdm(
            videos.itertuples(index=False),
            total=len(videos),
            desc=f"extract {k}/{n}" if n > 1 else "extract",
            unit="video",
            disable=not self.progress,
        )
        interrupted = False
        try:
            for row in bar:
                streams = self.todo(row.File_ID)
                if not streams:
                    self.stats["skipped"] += 1
                    continue
                self.processed[row.File_ID] = {s.name for s in streams}
                frames = self.process(row.File_ID, row.path, row.wav, streams)
                self.stats["videos"] += 1
                self.stats["frames"] += frames
                el = time.perf_counter() - t0
                bar.set_postfix_str(
                    f"{self.stats['frames'] / max(el, 1e-9):.1f} frames/s, "
                    f"{sum(r['failed'] for r in self.report)} failed"
                )
        except KeyboardInterrupt:
            interrupted = True
            tqdm.write("interrupted: writing the report and index; rerun the same command to resume")
        finally:
            bar.close()
            self.stats["seconds"] = time.perf_counter() - t0
            try:
                self.rebuild_indexes()
            finally:
                self.write_report(shard)
        failed = sorted({r["File_ID"] for r in self.report if r["failed"]})
        return {
            **self.stats,
            "failed": failed,
            "interrupted": interrupted,
            "report": str(self.report_path(shard)),
            "n_videos": len(videos),
        }

    def rebuild_indexes(self) -> int:
        """Every stream's index from its current files; damaged files go to the report. Returns the
        number of damaged files."""
        damaged = []
        for s in self.streams:
            index, bad = rebuild_index(self.store, s.name, s.hash)
            damaged += bad
            self._fix_dim(s, index)
        self.report += damaged
        return len(damaged)

    def _fix_dim(self, s: Stream, index: pd.DataFrame) -> None:
        """Streams whose width is only known from the data (MuSe CSVs): record it once a file exists."""
        meta = self.store.meta(s.name)
        if meta.get("dim") or not len(index):
            return
        with np.load(self.store.path(s.name, index["File_ID"].iloc[0])) as z:
            meta["dim"] = int(z["features"].shape[1])
        self.store.write_meta(s.name, meta)

    def report_path(self, shard: tuple[int, int]) -> Path:
        k, n = shard
        return self.out / ("extraction_report.csv" if n == 1 else f"extraction_report.shard-{k}-of-{n}.csv")

    def write_report(self, shard: tuple[int, int]) -> None:
        """This run's rows merged into the earlier report: an earlier row stays unless this run redid that
        video's stream (its new rows replace it) or it came from listing/indexing (redone every run)."""
        path = self.report_path(shard)
        old = pd.DataFrame(columns=REPORT_COLUMNS)
        if path.exists():
            try:
                old = pd.read_csv(path, dtype=str, keep_default_na=False)[REPORT_COLUMNS]
                old["failed"] = old["failed"].astype(str).str.lower() == "true"
            except (OSError, ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
                tqdm.write(f"warning: {path} is damaged ({type(e).__name__}: {e}); it is replaced by this run's rows")
                old = pd.DataFrame(columns=REPORT_COLUMNS)

        def redone(row) -> bool:
            if row["stage"] in RERUN_STAGES:
                return True
            done = self.processed.get(str(row["File_ID"]), set())
            return bool(done & set(str(row["stream"]).split(",")))

        keep = old[~old.apply(redone, axis=1)] if len(old) else old
        table = pd.concat([keep, pd.DataFrame(self.report, columns=REPORT_COLUMNS)], ignore_index=True)
        atomic_write_text(path, table.to_csv(index=False))

    def _copy_labels(self) -> None:
        if self.out.resolve() == self.root.resolve():
            return
        for name in ("data_info.csv", "labels.csv", "partition.csv"):
            src, dst = self.root / name, self.out / name
            if src.exists() and not dst.exists():
                atomic_write_text(dst, src.read_text())


def extract(config, data_root, shard=None, limit=None, progress=True, overrides=()) -> dict:
    """Entry point of tools/extract.py: ``config`` is a path or an already loaded config."""
    cfg = config if not isinstance(config, (str, Path)) else load_extract_config(config, overrides)
    return Extraction(cfg, data_root, progress=progress).run(
        parse_shard(shard) if isinstance(shard, (str, type(None))) else shard, limit
    )
