"""The streams an extraction config writes: one extractor each, with a config hash over everything
that changes its numbers, the descriptor written to its meta.json (`describe`: what the extractor
declares), and each stream's index rebuilt from the files whose hash is current. `declared_meta`: what a
stream is before any store exists (the catalogue's, else its registered extractor's declaration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from eri.config import ConfigError
from eri.constants import CATALOGUE
from eri.data.store import FeatureStore
from eri.errors import InputError, StoreError
from eri.features.base import extractor_hash
from eri.features.config import HASH_NEUTRAL, NON_NUMERIC
from eri.features.extractors import build_extractor, extractor_class
from eri.features.listing import report_row
from eri.io import check_name, name_problem
from eri.registry import config_keys
from eri.streams import FRAME, StreamMeta


@dataclass
class Stream:
    name: str  # stream (folder) name in the store
    extractor: Any
    dtype: str
    hash: str
    spec: dict


def _hashed(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in NON_NUMERIC and not (k in HASH_NEUTRAL and v == HASH_NEUTRAL[k])}


def stream_hash(spec: dict, cfg, kind: str) -> str:
    """The hash of everything that changes a stream's numbers: the extractor and its config, the dtype,
    and for face streams the decode and face settings."""
    upstream: dict = {"dtype": spec.get("dtype") or cfg.dtype}
    if kind == "face":
        upstream.update(decode=_hashed(OmegaConf.to_container(cfg.decode)), faces=_hashed(OmegaConf.to_container(cfg.faces)))
    return extractor_hash(spec["name"], {"config": _hashed(dict(spec.get("config") or {})), **upstream})


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


def describe(s: Stream, cfg, old: StreamMeta | None = None) -> StreamMeta:
    """The descriptor extraction writes for stream ``s``: what the extractor declares (width, rate,
    metadata), the dtype, the config and its hash, and for face streams the decode and face settings.
    ``old``: the stored descriptor, whose width a stream known only from its files (MuSe CSVs) keeps."""
    ext = s.extractor
    if ext.kind == "audio" and ext.rate == FRAME:
        raise ConfigError(f"extractor '{s.spec['name']}' (kind audio) declares no `rate` (steps per second)")
    dim = int(ext.dim)
    if ext.kind == "file" and not dim and old is not None:
        dim = old.dim
    face = ext.kind == "face"
    return StreamMeta(
        s.name, dim, FRAME if ext.kind != "audio" else float(ext.rate), dtype=s.dtype, extractor=s.spec["name"],
        config_hash=s.hash, config=dict(s.spec.get("config") or {}),
        faces=OmegaConf.to_container(cfg.faces) if face else None,
        decode=OmegaConf.to_container(cfg.decode) if face else None,
        extra=ext.metadata(),
    )


def declared_meta(name: str) -> StreamMeta:
    """What a stream of this name is before any store exists (the training benchmark's widths): the
    catalogue's entry (`eri.constants.CATALOGUE`), else what the extractor registered as ``name`` declares.
    ConfigError when neither knows its width."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    try:
        cls = extractor_class(name)
    except ConfigError:
        raise ConfigError(f"stream '{name}' is neither in the catalogue ({', '.join(CATALOGUE)}) nor a registered "
                          "extractor: its width is known only from a store's meta.json") from None
    if not cls.dim:
        raise ConfigError(f"stream '{name}': extractor '{name}' declares no width (it is known once extracted)")
    return StreamMeta(name, int(cls.dim), cls.rate if cls.kind == "audio" else FRAME, extractor=name)


def stored_hash(store: FeatureStore, stream: str, vid: str) -> str | None:
    """The config hash inside a stored file; None when it has none or is damaged (so it is recomputed)."""
    try:
        return store.inspect(stream, vid)["config_hash"]
    except StoreError:
        return None


def rebuild_index(store: FeatureStore, stream: str, current_hash: str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """``index.csv`` of a stream from its ``.npz`` files whose hash is current, and a report row for
    each file that is damaged or misshapen (left out of the index, so training never reads it)."""
    want = current_hash or store.stream_meta(stream).config_hash
    rows, damaged = [], []
    for p in sorted((store.dir / stream).glob("*.npz")):
        if name_problem(p.stem):
            damaged.append(report_row(repr(p.stem), stream, "index", f"{p}: file name is not a usable id"))
            continue
        try:
            info = store.inspect(stream, p.stem)
        except StoreError as e:
            damaged.append(report_row(p.stem, stream, "index", str(e)))
            continue
        if want is not None and info["config_hash"] != want:
            continue  # stale (or of unknown origin): never listed, so never read by training
        rows.append({"File_ID": p.stem, "n_steps": info["n_steps"], "n_valid": info["n_valid"]})
    store.write_index(stream, rows)
    return pd.DataFrame(rows, columns=["File_ID", "n_steps", "n_valid"]), damaged
