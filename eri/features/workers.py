"""Pipelined extraction (``tools/extract.py --workers N``): N worker processes decode, detect and align
(`eri.features.faceflow`) and decode the audio, each a few chunks ahead, while the main process writes
the store, video after video in the usual order. Who runs the face extractors is ``extract_in``:

- ``workers`` (``auto`` with two or more workers on a CPU): each worker runs the whole face half of
  a video on one thread and sends features. On 2 cores this beat splitting the work (measured in the
  README's "At Hume-Reaction scale"): every core runs single-threaded code with no hand-offs, where
  a sequential run on two torch threads was only 1.36x its one-thread rate.
- ``main`` (``auto`` with ``device: cuda`` or one worker): workers send aligned crops and the main
  process runs the extractors, so several decode workers keep one device fed while the CPU decodes.

Video ``i`` goes to worker ``i mod N`` and the main process reads the workers' queues in video order,
so the store, the report and the index are written exactly as a sequential run writes them: the same
groups of crops reach the same extractors (byte-identical files, tested in both modes). Queues are
bounded (``QUEUE_MESSAGES`` groups per worker), so memory stays flat. A worker forwards `face_flow`'s
`Decoded` event of each chunk too, so the main process's progress bar counts frames as they are done.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

QUEUE_MESSAGES = 8


@dataclass
class Job:
    vid: str
    path: str
    faces: bool  # decode, detect and align for the face streams
    audio: bool  # decode the audio track
    extract: tuple[str, ...] = ()  # face streams the worker extracts itself (extract_in: workers)


def extract_in(cfg, workers: int) -> str:
    """Where ``--workers`` runs the face extractors. ``auto``: ``main`` on a GPU, and with one worker
    (the work then splits over two processes); ``workers`` with two or more workers on a CPU."""
    if cfg.extract_in != "auto":
        return cfg.extract_in
    import torch

    gpu = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    return "main" if gpu or workers < 2 else "workers"


def _face_extractors(cfg) -> dict:
    """``{stream: extractor}`` of the config's face streams, built as the main process builds them."""
    from eri.features.extractors import extractor_class
    from eri.features.streams import build_streams

    face = [e for e in cfg.extractors if extractor_class(e["name"]).kind == "face"]
    return {s.name: s.extractor for s in build_streams(OmegaConf.merge(cfg, {"extractors": face}))}


def _worker(cfg: dict, jobs: list[Job], out) -> None:
    """One worker: prepare every job's media in order and send it, then "exit"."""
    import torch

    from eri.features.faceflow import Crops, Features, extract_crops, face_flow
    from eri.features.video import DecodeError, decode_audio, return_freed_frames

    torch.set_num_threads(1)
    return_freed_frames()
    cfg = OmegaConf.create(cfg)
    detector, extractors = None, None
    try:
        for job in jobs:
            if job.faces:
                try:
                    if detector is None:
                        from eri.features.faces import make_detector

                        detector = make_detector(cfg)
                    if job.extract and extractors is None:
                        extractors = _face_extractors(cfg)
                    mine, failed = {name: extractors[name] for name in job.extract}, {}
                    for event in face_flow(job.path, cfg, detector, as_numpy=True):
                        if mine and isinstance(event, Crops):
                            event = Features(event.idx, extract_crops(mine, event.crops, failed), dict(failed))
                        out.put(("face", job.vid, event))
                except DecodeError as e:
                    out.put(("face_error", job.vid, ("decode", str(e))))
                except Exception as e:  # noqa: BLE001 - one bad video never stops the job
                    out.put(("face_error", job.vid, ("faces", f"{job.path}: {type(e).__name__}: {e}")))
            if job.audio:
                try:
                    out.put(("audio", job.vid, decode_audio(job.path)))
                except Exception as e:  # noqa: BLE001
                    out.put(("audio_error", job.vid, e if isinstance(e, DecodeError) else RuntimeError(f"{job.path}: {e}")))
            out.put(("done", job.vid, None))
    except KeyboardInterrupt:
        return
    out.put(("exit", None, None))


class Prepared:
    """What a worker prepared for one video, read from its queue in the order it was sent."""

    def __init__(self, pool: "Workers", k: int, vid: str):
        self.pool, self.k, self.vid = pool, k, vid

    def _next(self):
        kind, vid, payload = self.pool.get(self.k)
        if vid != self.vid:
            raise RuntimeError(f"extraction workers out of step: expected {self.vid}, got {vid}")
        return kind, payload

    def faces(self):
        """The `face_flow` events of this video (errors re-raised as in the main process)."""
        from eri.features.faceflow import FaceSummary
        from eri.features.video import DecodeError

        while True:
            kind, payload = self._next()
            if kind == "face_error":
                stage, msg = payload
                raise DecodeError(msg) if stage == "decode" else RuntimeError(msg)
            yield payload
            if isinstance(payload, FaceSummary):
                return

    def audio(self):
        kind, payload = self._next()
        if kind == "audio_error":
            raise payload
        return payload

    def finish(self) -> None:
        """Read whatever this video's processing did not (e.g. after an extractor failed)."""
        while True:
            kind, _ = self._next()
            if kind == "done":
                return


class Workers:
    """N worker processes over a fixed list of jobs; `prepared(i)` is job i's media."""

    def __init__(self, cfg, jobs: list[Job], n: int):
        ctx = mp.get_context("spawn")  # no forked torch/OpenMP state
        self.n = n
        self.queues = [ctx.Queue(QUEUE_MESSAGES) for _ in range(n)]
        plain = OmegaConf.to_container(cfg, resolve=True)
        self.procs = [ctx.Process(target=_worker, args=(plain, jobs[k::n], self.queues[k]), daemon=True) for k in range(n)]
        for p in self.procs:
            p.start()

    def get(self, k: int):
        while True:
            try:
                msg = self.queues[k].get(timeout=5)
            except queue_module.Empty:
                if not self.procs[k].is_alive():
                    raise RuntimeError(f"extraction worker {k} died (exit code {self.procs[k].exitcode})") from None
                continue
            if msg[0] == "exit":
                raise RuntimeError(f"extraction worker {k} ran out of jobs early")
            return msg

    def prepared(self, i: int, vid: str) -> Prepared:
        return Prepared(self, i % self.n, vid)

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=10)
        for q in self.queues:
            q.close()
            q.cancel_join_thread()


def jobs_for(rows, todo: dict[str, list], extract: bool = False) -> list[Job]:
    """One job per video that has media work: the face and/or audio streams still to compute
    (``extract``: the worker also runs that video's face extractors)."""
    jobs = []
    for row in rows:
        streams = todo.get(row.File_ID) or []
        face = tuple(s.name for s in streams if s.extractor.kind == "face")
        audio = any(s.extractor.kind == "audio" for s in streams)
        if (face or audio) and isinstance(row.path, Path):
            jobs.append(Job(row.File_ID, str(row.path), bool(face), audio, face if extract else ()))
    return jobs
