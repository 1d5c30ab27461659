"""What a stream of the feature store is: `StreamMeta`, the typed form of ``features/<stream>/meta.json``.

One pair of functions writes and reads it (`write_stream_meta`, `read_stream_meta`); extraction, the
synthetic generator, training, prediction and the benchmarks all go through them, and through
`StreamMeta.from_dict` for the dict form a model file carries (``ModelSpec.streams``).

The JSON stays what eri has always written (sorted keys, two-space indent): ``stream``, ``dim``, ``rate``,
``dtype``, ``extractor``, ``config_hash``, ``config``, ``faces`` and ``decode`` (face streams), ``weights``,
then the extractor's own metadata at the top level (``extra`` here). A key absent from an old file stays
absent when it is written back, so the bytes of an unchanged stream never change (the dataset signature
hashes them). Top-level rather than in ``eri.data`` so that `eri.constants` can hold the catalogue of the
papers' streams as StreamMeta without an import cycle.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from eri.errors import StoreError
from eri.io import atomic_write_text

FRAME = "frame"  # ``rate`` of a stream with one step per video frame
RANDOM = "random"  # ``weights`` of an extractor run with randomly initialised weights
FILE = "meta.json"
# JSON keys with a field of their own; every other key is extractor metadata (``extra``)
_KEYS = {"stream": "name", "dim": "dim", "rate": "rate", "dtype": "dtype", "extractor": "extractor",
         "weights": "weights", "config_hash": "config_hash", "config": "config", "faces": "faces", "decode": "decode"}


@dataclass(frozen=True)
class StreamMeta:
    """One stream: its width and step rate, how its numbers were made, and where its weights came from.

    Optional fields are None when the stream does not have them (a synthetic stream has no extractor
    ``config``; a file written by an older eri may lack ``dtype``), and are then left out of the JSON."""

    name: str  # the stream (folder) name
    dim: int  # columns per step (0: not known until a file is written, e.g. imported CSVs)
    rate: Union[str, float, None] = FRAME  # "frame": one step per video frame; a number: steps per second
    dtype: Optional[str] = None  # float16 | float32: how the steps are stored
    extractor: Optional[str] = None  # the registered extractor that wrote it ("synthetic", "muse2022": no extractor)
    weights: Optional[str] = None  # the weights file it ran with, RANDOM (random init), or None (none / not recorded)
    config_hash: Optional[str] = None  # changes whenever anything that changes the numbers changes
    config: Optional[dict] = None  # the extractor's config as given in the extraction config
    faces: Optional[dict] = None  # face streams: the face detection and alignment settings
    decode: Optional[dict] = None  # face streams: the decode settings
    extra: dict = field(default_factory=dict)  # the extractor's own metadata (weights_sha256, classes, ...)

    def __post_init__(self):
        extra = dict(self.extra)
        clash = sorted(set(extra) & (set(_KEYS) - {"weights"}))
        if clash:
            raise ValueError(f"stream '{self.name}': extractor metadata may not set {clash} (fields of StreamMeta)")
        if "weights" in extra:  # an extractor's metadata() names its weights file at the top level
            weights = extra.pop("weights")
            object.__setattr__(self, "weights", self.weights or weights)
        if self.weights == RANDOM:
            extra.setdefault("random_init", True)
        elif self.weights is None and extra.get("random_init") is True:
            object.__setattr__(self, "weights", RANDOM)
        object.__setattr__(self, "extra", extra)

    @property
    def per_frame(self) -> bool:
        """One step per video frame (the valid-frame minimum and ``frame_stride`` apply)."""
        return self.rate == FRAME

    @property
    def random_init(self) -> bool:
        """Extracted with random weights: the features carry no learned information."""
        return self.weights == RANDOM

    def replace(self, **changes) -> "StreamMeta":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The meta.json object (keys sorted, as written), JSON-ready."""
        out: dict[str, Any] = dict(self.extra)
        for key, attr in _KEYS.items():
            value = getattr(self, attr)
            if key == "weights" and value == RANDOM:
                continue  # recorded as random_init in the extra metadata
            if value is not None or key in ("stream", "dim"):
                out[key] = value
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, d: dict, name: str | None = None) -> "StreamMeta":
        """The descriptor of a meta.json object or of a model file's ``ModelSpec.streams`` entry (old ones
        included); ``name``: the stream's name when the dict does not say. ValueError/TypeError when a
        field has the wrong type."""
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        fields = {attr: d.get(key) for key, attr in _KEYS.items()}
        fields["name"] = str(fields["name"] if fields["name"] is not None else (name or ""))
        fields["dim"] = int(fields["dim"] or 0)
        if fields["dim"] < 0:
            raise ValueError(f"negative dim {fields['dim']}")
        rate = fields["rate"]
        number = isinstance(rate, (int, float)) and not isinstance(rate, bool)
        if not (rate is None or isinstance(rate, str) or number):
            raise ValueError(f"rate must be \"frame\" or steps per second, got {rate!r}")
        for key in ("config", "faces", "decode"):
            if fields[key] is not None and not isinstance(fields[key], dict):
                raise ValueError(f"{key} is not a mapping")
        if "weights" not in d:
            fields["weights"] = None
        return cls(**fields, extra={k: v for k, v in d.items() if k not in _KEYS})


def meta_path(folder: str | Path) -> Path:
    return Path(folder) / FILE


def write_stream_meta(folder: str | Path, meta: StreamMeta) -> Path:
    """``<folder>/meta.json`` (atomic; sorted keys, two-space indent: the bytes eri has always written)."""
    path = meta_path(folder)
    atomic_write_text(path, json.dumps(meta.to_dict(), indent=2, sort_keys=True))
    return path


def read_stream_meta(path: str | Path) -> StreamMeta:
    """The StreamMeta of a ``meta.json`` (or of the folder holding it); StoreError naming the file when it
    is missing or damaged."""
    path = Path(path)
    path = path if path.suffix == ".json" else meta_path(path)
    try:
        return StreamMeta.from_dict(json.loads(path.read_text()), name=path.parent.name)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise StoreError(f"{path} is damaged ({type(e).__name__}: {e})") from None
