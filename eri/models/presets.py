"""Named encoder sizes, each defined once (timm-style presets): ``paper`` (the papers' sizes),
``demo`` (what `configs/demo.yaml` trains on 2 CPU cores) and ``tiny`` (tests and CI), declared with
each encoder's registration (``@ENCODERS.register(name, presets=...)`` in `eri.models.encoders`, or in
a new encoder's own file) and read here through the registry.

A config names one as ``encoder: {name: gru_transformer, preset: demo}``; keys written beside it
override the preset's. Presets are expanded when a config is loaded (`expand_encoder`), so a run's
saved ``config.yaml``, its checkpoint and every cache key hold the explicit sizes: changing a preset
changes the demo, the benchmarks, the ablation tables and the search spaces at once, and can never
be served a run trained at the old size.
"""

from __future__ import annotations

from eri.errors import ConfigError
from eri.models.encoders import ENCODERS

ENCODER_PRESETS = ENCODERS.presets  # {encoder: {preset: sizes}}: declared where each encoder is registered


def encoder_preset(name: str, preset: str) -> dict:
    """``{name, **sizes}`` of a named preset."""
    if name not in ENCODER_PRESETS or preset not in ENCODER_PRESETS[name]:
        have = sorted(ENCODER_PRESETS.get(name, {}))
        raise ConfigError(f"no preset '{preset}' for encoder '{name}'; presets: {have}")
    return {"name": name, **ENCODER_PRESETS[name][preset]}


def expand_encoder(spec: dict, where: str = "encoder") -> dict:
    """``{name, preset: P, **keys}`` -> ``{**preset P, **keys}``; a spec without a preset is returned as is."""
    spec = dict(spec)
    preset = spec.pop("preset", None)
    if preset is None:
        return spec
    try:
        return {**encoder_preset(spec.get("name"), preset), **spec}
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
