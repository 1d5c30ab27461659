"""The extraction config schema (``configs/extract/*.yaml``): decoding, faces, extractors, each range
checked once (`eri.config.rule`); and the way back, from the stream descriptors a model was trained on
to the extraction config that computes them for a new video (`extraction_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from eri.config import ConfigError, check_rules, guard, load_structured, rule
from eri.errors import InputError
from eri.streams import StreamMeta

# config keys that do not change the numbers beyond float rounding: not in the stream hash
NON_NUMERIC = ("device", "batch_size", "chunk_mb", "max_pixels")
# keys added after stores were written: hashed only when set away from this value, so old stores stay current
HASH_NEUTRAL = {"detect_max_side": None}
STREAM_KEYS = ("name", "stream", "dtype", "config")


@dataclass
class DecodeConfig:
    fps: Optional[float] = rule(None, gt=0)  # None: native frames (VFR kept); a number: resample onto that rate
    # downscale frames on decode so the longer side is at most this (None: 3840, eri.features.video.MAX_SIDE)
    max_side: Optional[int] = rule(None, ge=16)
    # refuse a video whose frames have more pixels (a decompression bomb); default 8K UHD
    max_pixels: int = rule(7680 * 4320, ge=256)
    chunk_mb: float = rule(256, gt=0)  # frames are decoded and processed this many MB at a time (flat memory)


@dataclass
class FaceConfig:
    crop_size: int = rule(224, ge=16)  # aligned crop side (224 for ResNet18)
    min_face_size: int = rule(40, ge=1)
    thresholds: list = field(default_factory=lambda: [0.6, 0.7, 0.7])
    min_prob: float = rule(0.9, ge=0, le=1)
    center_weight: float = rule(0.5, ge=0)
    every_k: int = rule(1, ge=1)  # detect on every k-th frame, interpolate between (1: every frame)
    detect_scale: float = rule(1.0, gt=0, le=1)  # downscale factor for detection (<1 is faster)
    detect_max_side: Optional[int] = rule(None, ge=64)  # also detect at most this long a side (4K: e.g. 1280)
    max_jump: float = rule(0.25, gt=0)
    batch_size: int = rule(32, ge=1)  # frames per MTCNN call and per alignment/extractor chunk


@dataclass
class ExtractConfig:
    layout: str = rule("auto", choices=("auto", "abaw5", "muse2022", "folder"))
    videos_dir: Optional[str] = None  # where media are searched (relative to the data root); default: the root
    out: Optional[str] = None  # store root; default: the data root (training reads data_info.csv + features/ there)
    device: str = "cpu"  # cpu | cuda | auto: default for MTCNN and every extractor that takes a device
    # with --workers: who runs the face extractors (auto: the workers given 2+ on a CPU, else the main process)
    extract_in: str = rule("auto", choices=("auto", "main", "workers"))
    dtype: str = rule("float16", choices=("float16", "float32"))  # per stream: extractors[i].dtype
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    faces: FaceConfig = field(default_factory=FaceConfig)
    extractors: list = field(default_factory=list)  # [{name, stream?, dtype?, config: {...}}]




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


def check_stream_settings(metas: dict, where: str) -> None:
    """Each stream's stored face and decode settings (a model file's spec: it may come from a stranger)
    against this schema's types and ranges: one `ConfigError` naming ``where``, not a crash deep in
    extraction (``faces.every_k: 0``)."""
    for stream, meta in metas.items():
        for key, schema in (("faces", FaceConfig), ("decode", DecodeConfig)):
            value = meta.get(key) if isinstance(meta, dict) else None
            if value is None:
                continue
            what = f"{where}: its model spec has stream '{stream}' settings"
            if not isinstance(value, dict):
                raise ConfigError(f"{what}: {key} is not a mapping")
            cfg = guard(lambda: OmegaConf.merge(OmegaConf.structured(schema), value), what, schema)
            check_rules(cfg, schema, what, f"{key}.")
        try:
            StreamMeta.from_dict(meta, stream)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: its model spec has damaged stream '{stream}' settings ({e})") from None


# what a user with a model that cannot read new videos can do instead
TRAIN_ON_VIDEO = ("train one on features eri extracts from video: tools/extract.py --config "
                  "configs/extract/offline.yaml --data-root DATA, then tools/train.py --config configs/offline.yaml "
                  "data.root=DATA")


def not_from_video(meta: StreamMeta) -> str | None:
    """Why a stream cannot be computed for a new video (None: a registered extractor computes it from one)."""
    from eri.features.extractors import EXTRACTORS, extractor_class

    extractor = meta.extractor
    if extractor == "synthetic":
        return "synthetic features (eri.data.synthetic)"
    if extractor in ("muse", "muse2022"):
        return "MuSe 2022 organiser features"
    if extractor is None or extractor not in EXTRACTORS:
        return f"features of no known extractor ({extractor!r} in its meta.json)"
    if extractor_class(extractor).kind == "file":
        return f"features imported from precomputed files ({extractor})"
    return None


def extraction_config(metas: dict, device: str = "cpu", source: str = "the model"):
    """The extraction config that reproduces a model's training streams (``ModelSpec.streams``: stream
    -> meta.json object or StreamMeta); their face/decode settings must agree. A model trained on streams
    no extractor computes from a video (synthetic, organiser or imported features) is refused with one
    line naming the config to train a usable one."""
    faces = decode = None
    extractors = []
    for stream, m in metas.items():
        m = m if isinstance(m, StreamMeta) else StreamMeta.from_dict(m, stream)
        why = not_from_video(m)
        if why:
            raise InputError(f"{source} cannot predict new videos: it was trained on {why} (stream '{stream}'); "
                             f"{TRAIN_ON_VIDEO}")
        if m.faces is not None:
            if faces is not None and (m.faces != faces or (m.decode or {}) != decode):
                raise InputError(f"stream '{stream}' was extracted with other face/decode settings than another stream")
            faces, decode = m.faces, m.decode or {}
        conf = {k: v for k, v in (m.config or {}).items() if k != "device"}  # this machine's device applies
        dtype = "float16" if m.dtype == "uint8" else m.dtype or "float32"  # crops: pixels travel as float16 rows
        extractors.append({"name": m.extractor, "stream": stream, "dtype": dtype, "config": conf})
    update = {"extractors": extractors, "device": device, "layout": "folder",
              **({"faces": faces, "decode": decode} if faces else {})}
    return guard(lambda: OmegaConf.merge(OmegaConf.structured(ExtractConfig), update), "the model's extraction settings")
