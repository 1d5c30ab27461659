"""The extraction job: a folder of videos -> the feature store that training reads.

Per video: decode once (`eri.features.video`), detect + align faces once (`eri.features.faces`) when a
``face`` extractor needs them, run every extractor on its input, write one ``.npz`` per stream
(`eri.data.store.FeatureStore`, atomic; a codec stream, the face crops, chunk by chunk through
`FeatureStore.writer`, so its memory does not grow with the video). Then each stream's ``index.csv`` is
rebuilt from the files whose config hash is current.

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

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from eri.data.store import FeatureStore, unlearned
from eri.errors import StoreError
from eri.features.config import load_extract_config
from eri.features.listing import list_videos, parse_shard, report_row
from eri.features.progress import FrameBar
from eri.features.streams import Stream, build_streams, describe, rebuild_index, stored_hash
from eri.io import atomic_write_text

REPORT_COLUMNS = ["File_ID", "stream", "stage", "error", "failed"]
RERUN_STAGES = ("find", "labels", "index")  # report rows every run derives afresh


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
        self.bar = None  # the last run's `eri.features.progress.FrameBar` (frames done, total)
        self._detector = None
        self.report: list[dict] = []
        self.processed: dict[str, set[str]] = {}  # video -> streams this run computed (their old report rows go)
        self.stats = {"videos": 0, "skipped": 0, "frames": 0, "seconds": 0.0, "stale": 0}

    @property
    def detector(self):
        if self._detector is None:
            from eri.features.faces import make_detector

            self._detector = make_detector(self.cfg)
        return self._detector

    # -- meta
    def write_meta(self) -> None:
        """Each stream's descriptor (`eri.features.streams.describe`), saying so when its config changed."""
        for s in self.streams:
            try:
                old = self.store.stream_meta(s.name)
            except StoreError:
                old = None  # none yet, or damaged: written afresh
            if old is not None and old.config_hash != s.hash:
                tqdm.write(
                    f"stream '{s.name}': config changed ({old.config_hash} -> {s.hash}); stored files with the old "
                    "hash will be recomputed, never reused"
                )
            self.store.write_meta(s.name, describe(s, self.cfg, old))

    def todo(self, vid: str) -> list[Stream]:
        """Streams of ``vid`` to compute: missing, or stored with another hash, or damaged."""
        out = []
        for s in self.streams:
            if self.store.path(s.name, vid).exists():
                if stored_hash(self.store, s.name, vid) == s.hash:
                    continue
                self.stats["stale"] += 1
            out.append(s)
        return out

    def _note(self, vid: str, stream: str, stage: str, error: str, failed: bool) -> None:
        self.report.append(report_row(vid, stream, stage, error, failed))

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
        if p.exists() and stored_hash(self.store, s.name, vid) != s.hash:
            p.unlink()

    def process(self, vid: str, path: Path | None, wav: Path | None, streams: list[Stream], media=None) -> int:
        """Extract ``streams`` for one video; returns the number of frames decoded. Errors are noted.

        A file that cannot be decoded fails every stream that needs it; a broken audio track fails the
        audio streams only, zero video frames the face streams only. ``media``: what a decode worker
        prepared for this video (`eri.features.workers.Prepared`); None: decode here."""
        from eri.features.faceflow import face_flow
        from eri.features.video import DecodeError, decode_audio

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
            events = media.faces() if media is not None else face_flow(path, self.cfg, self.detector)
            n_frames = self._faces(vid, path, events, face_streams)
        if audio_streams:
            try:  # a broken audio track fails the audio streams only
                wave = media.audio() if media is not None else decode_audio(path)
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

    def _faces(self, vid: str, path: Path, events, streams: list[Stream]) -> int:
        """Run every face extractor on each group of aligned crops as it arrives; write at the end. A codec
        stream (face crops) goes to its store writer chunk by chunk (`FeatureStore.writer`: flat memory
        whatever the video's length); the others' small per-frame features are gathered and written whole."""
        writers: dict = {}
        try:
            for s in streams:
                if (w := self.store.writer(s.name, vid)) is not None:
                    writers[s.name] = w
            return self._face_events(vid, path, events, streams, writers)
        finally:  # an error or Ctrl-C anywhere: no partial file, no temporary file (a no-op once committed)
            for w in writers.values():
                w.abort()

    def _face_events(self, vid: str, path: Path, events, streams: list[Stream], writers: dict) -> int:
        from eri.features.faceflow import Decoded, FaceSummary, Features, extract_crops
        from eri.features.video import DecodeError

        names = ",".join(s.name for s in streams)
        parts: dict[str, list] = {s.name: [] for s in streams if s.name not in writers}
        extractors = {s.name: s.extractor for s in streams}
        dtypes = {s.name: s.dtype for s in streams}
        failed: dict[str, str] = {}
        summary = None
        try:
            for ev in events:
                if isinstance(ev, FaceSummary):
                    summary = ev
                    continue
                if isinstance(ev, Decoded):  # a chunk is through: the progress bar moves
                    if self.bar is not None:
                        self.bar.tick(ev.frames, ev.expected)
                    continue
                if isinstance(ev, Features):  # a worker ran the extractors (extract_in: workers)
                    outputs = ev.outputs
                    for name, msg in ev.failed.items():
                        failed.setdefault(name, msg)
                else:
                    outputs = extract_crops(extractors, ev.crops, failed)
                for name, out in outputs.items():
                    if name not in writers:
                        parts[name].append((ev.idx, out))
                    elif name not in failed:
                        try:  # the cast `_write` makes, so both paths store the same pixels
                            writers[name].add(ev.idx, out if out.dtype == np.uint8 else
                                              np.asarray(out, np.float32).astype(dtypes[name]))
                        except Exception as e:  # noqa: BLE001 - a wrong shape, a full disk: this stream fails
                            failed[name] = f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - DecodeError, or anything else a broken file provokes
            for s in streams:
                self._drop_stale(s, vid)
            decode_failed = isinstance(e, DecodeError)
            msg = str(e) if decode_failed else f"{path}: {type(e).__name__}: {e}"
            self._note(vid, names, "decode" if decode_failed else "faces", msg, True)
            return 0
        if summary.partial:  # the frames before the damage are used; the report says how many of how many
            self._note(vid, names, "decode", summary.partial, False)
        if not summary.valid.any():
            self._note(vid, names, "faces", f"no face in any of {summary.n_frames} frames", False)
        for s in streams:
            if s.name in failed:
                self._drop_stale(s, vid)
                self._note(vid, s.name, "extract", failed[s.name], True)
                continue
            try:
                if s.name in writers:
                    writers[s.name].commit(summary.valid, np.asarray(summary.timestamps, np.float32),
                                           extra={"config_hash": np.array([s.hash])})
                    continue
                feats = np.zeros((summary.n_frames, s.extractor.dim), np.float32)
                for idx, out in parts[s.name]:
                    feats[idx] = out
                self._write(s, vid, feats, summary.valid, summary.timestamps)
            except VideoError as e:
                self._note(vid, s.name, e.stage, str(e), True)
            except StoreError as e:  # the writer's checks (a frame index past the video's end)
                self._drop_stale(s, vid)
                self._note(vid, s.name, "extract", str(e), True)
        return summary.n_frames

    # -- the job
    def run(self, shard: tuple[int, int] = (0, 1), limit: int | None = None, workers: int = 0) -> dict:
        """Extract every video of the shard; ``workers`` > 0: decode, detect, align (and, with
        ``extract_in: workers``, extract) in that many processes (`eri.features.workers`; same files)."""
        from eri.features.video import return_freed_frames
        from eri.features.workers import Workers, extract_in, jobs_for

        return_freed_frames()
        videos, listing = list_videos(self.root, self.cfg.layout, self.cfg.videos_dir)
        k, n = shard
        videos = videos.iloc[k::n]
        if limit:
            videos = videos.iloc[:limit]
        if k == 0:
            self.report += listing  # the same for every shard: reported once
        self._copy_labels()
        self.write_meta()
        rows = list(videos.itertuples(index=False))
        todo = {row.File_ID: self.todo(row.File_ID) for row in rows}
        jobs = jobs_for(rows, todo, extract_in(self.cfg, workers) == "workers") if workers else []
        job_of = {job.vid: i for i, job in enumerate(jobs)}
        t0 = time.perf_counter()
        decodes = {vid for vid, streams in todo.items() if any(s.extractor.kind == "face" for s in streams)}
        bar = self.bar = FrameBar(len(rows), len(decodes), f"extract {k}/{n}" if n > 1 else "extract", not self.progress)
        interrupted, pool, threads = False, None, torch.get_num_threads()
        try:
            if jobs:  # the workers take one core each; the extractors here get the rest
                torch.set_num_threads(max(1, torch.get_num_threads() - workers))
            pool = Workers(self.cfg, jobs, workers) if jobs else None
            for row in rows:
                streams = todo[row.File_ID]
                bar.video(row.File_ID in decodes)
                if not streams:
                    self.stats["skipped"] += 1
                    bar.end(0, "already extracted")
                    continue
                self.processed[row.File_ID] = {s.name for s in streams}
                media = pool.prepared(job_of[row.File_ID], row.File_ID) if row.File_ID in job_of else None
                frames = self.process(row.File_ID, row.path, row.wav, streams, media)
                if media is not None:
                    media.finish()
                self.stats["videos"] += 1
                self.stats["frames"] += frames
                bar.end(frames, f"{sum(r['failed'] for r in self.report)} failed")
        except KeyboardInterrupt:
            interrupted = True
            tqdm.write("interrupted: writing the report and index; rerun the same command to resume")
        finally:
            bar.close()
            if pool is not None:
                pool.close()
            torch.set_num_threads(threads)
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
            "warnings": self.warnings(),
        }

    def warnings(self) -> list[str]:
        """What makes this store's features meaningless though extraction succeeded (random weights)."""
        return [w for s in self.streams if (w := unlearned(s.name, describe(s, self.cfg)))]

    def index_only(self) -> int:
        """`rebuild_indexes` for ``--index-only``, refused (one line, nothing written) when a stream's
        stored files were extracted with other settings than these: indexing by this config's hash would
        empty ``index.csv``. Returns the number of damaged files."""
        from eri.errors import ConfigError

        for s in self.streams:
            stored = self.store.stream_meta(s.name).config_hash
            if stored is not None and stored != s.hash:
                raise ConfigError(
                    f"--index-only: stream '{s.name}' in {self.store.dir / s.name} was extracted with other settings "
                    f"(config hash {stored} in its meta.json; this config gives {s.hash}), so none of its files would "
                    "be indexed: pass the config (and overrides) it was extracted with, or extract with these settings"
                )
        return self.rebuild_indexes()

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
        meta = self.store.stream_meta(s.name)
        if meta.dim or not len(index):
            return
        with np.load(self.store.path(s.name, index["File_ID"].iloc[0])) as z:
            self.store.write_meta(s.name, meta.replace(dim=int(z["features"].shape[1])))

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


def extract(config, data_root, shard=None, limit=None, progress=True, overrides=(), workers: int = 0) -> dict:
    """Entry point of tools/extract.py: ``config`` is a path or an already loaded config."""
    cfg = config if not isinstance(config, (str, Path)) else load_extract_config(config, overrides)
    return Extraction(cfg, data_root, progress=progress).run(
        parse_shard(shard) if isinstance(shard, (str, type(None))) else shard, limit, workers
    )
