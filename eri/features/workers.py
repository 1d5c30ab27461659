"""Pipelined extraction (``tools/extract.py --workers N``): N worker processes decode, detect and align
(`eri.features.faceflow`) and decode the audio, each a few chunks ahead, while the main process runs
the extractors and writes the store, video after video in the usual order.

On a CPU the work splits in two halves of similar cost, MTCNN (in the workers) and the face
extractors (in the main process), so two cores run both at once. Each worker runs with one torch
thread. Video ``i`` goes to worker ``i mod N`` and the main process reads the workers' queues in
video order, so the store, the report and the index are written exactly as a sequential run writes
them: the same groups of crops reach the same extractors (byte-identical files, tested). Queues are
bounded (``QUEUE_MESSAGES`` groups of crops per worker), so memory stays flat. With
``device=cuda`` the workers detect on the GPU too (each its own CUDA context); several of them keep
one device fed while the CPU decodes.
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


def _worker(cfg: dict, jobs: list[Job], out) -> None:
    """One worker: prepare every job's media in order and send it, then "exit"."""
    import torch

    from eri.features.faceflow import face_flow
    from eri.features.video import DecodeError, decode_audio, return_freed_frames

    torch.set_num_threads(1)
    return_freed_frames()
    cfg = OmegaConf.create(cfg)
    detector = None
    try:
        for job in jobs:
            if job.faces:
                try:
                    if detector is None:
                        from eri.features.faces import make_detector

                        detector = make_detector(cfg)
                    for event in face_flow(job.path, cfg, detector, as_numpy=True):
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


def jobs_for(rows, todo: dict[str, list]) -> list[Job]:
    """One job per video that has media work: the face and/or audio streams still to compute."""
    jobs = []
    for row in rows:
        streams = todo.get(row.File_ID) or []
        faces = any(s.extractor.kind == "face" for s in streams)
        audio = any(s.extractor.kind == "audio" for s in streams)
        if (faces or audio) and isinstance(row.path, Path):
            jobs.append(Job(row.File_ID, str(row.path), faces, audio))
    return jobs
