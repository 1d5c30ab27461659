"""The extractor interface: every stream of the feature store is written by one small extractor class.

An extractor declares what it consumes (``kind``) and its output width (``dim``); the pipeline
(`eri.features.pipeline`) decodes, detects and aligns once per video and hands each extractor the
input of its kind, batched over frames:

- ``"face"``:  aligned face crops, uint8 (N, S, S, 3) RGB, S = the crop size in the face config
               -> (N, dim) float32, one row per frame (rows of frames without a face are marked
               invalid by the pipeline; the extractor never sees them).
- ``"audio"``: the whole 16 kHz mono waveform, float32 (n_samples,)
               -> ``(features (T, dim) float32, timestamps (T,) seconds)``.
- ``"file"``:  a per-video file written by another tool (OpenFace CSV, MuSe ``feats/<NAME>/<id>.csv``),
               given the video id and the dataset root -> ``(features (T, dim), valid (T,), timestamps (T,))``.

``config`` is the extractor's own config dict; its hash is stored with the outputs so a changed
config is never silently reused (`extractor_hash`). Classes take their config as keyword arguments; the
registry (`eri.features.extractors.build_extractor`) checks keys against the constructor's signature.
A ``device`` argument, when a class has one, receives the job's ``device`` unless the config sets it.

``rate``: the stream's step rate written to the store's meta.json: "frame" (one step per video frame,
what face and file kinds give) or, for audio kinds, steps per second (a class attribute, or set per
instance from the config; an audio extractor that leaves it at "frame" is refused). ``dim`` may be set
per instance once known (e.g. from a loaded model); it must be right before the first video is processed.

What a new extractor needs: a subclass with ``name``, ``kind``, ``dim`` (and ``rate`` for audio), a
``__call__`` for its kind and, where it has weights, ``metadata()`` naming them (``weights``: the file, or
``random_init: True``), registered with ``@register_extractor(NAME)`` (`eri.features.extractors`). Its
stream then flows through extraction, training, prediction from video and the training benchmark.
"""

from __future__ import annotations

from eri.io import stable_hash


class Extractor:
    name: str = ""  # registry key and default stream name
    kind: str = ""  # "face" | "audio" | "file"
    dim: int = 0
    rate: float | str = "frame"  # "frame" (face, file kinds) or steps per second of the output (audio kinds)

    def __init__(self, **config):
        self.config = dict(config)

    def __call__(self, x):
        raise NotImplementedError

    def metadata(self) -> dict:
        """Anything a reader of the store should know (weights file, random init, versions)."""
        return {}


def extractor_hash(name: str, config: dict) -> str:
    """Stable 12-hex hash of an extractor's name + config (key order does not matter)."""
    return stable_hash({"name": name, "config": config})
