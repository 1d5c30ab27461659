"""Named encoder sizes, each defined once (timm-style presets): ``paper`` (the papers' sizes),
``demo`` (what `configs/demo.yaml` trains on 2 CPU cores) and ``tiny`` (tests and CI).

A config names one as ``encoder: {name: gru_transformer, preset: demo}``; keys written beside it
override the preset's. Presets are expanded when a config is loaded (`expand_encoder`), so a run's
saved ``config.yaml``, its checkpoint and every cache key hold the explicit sizes: changing a preset
changes the demo, the benchmarks, the ablation tables and the search spaces at once, and can never
be served a run trained at the old size.
"""

from __future__ import annotations

from eri.errors import ConfigError

ENCODER_PRESETS: dict[str, dict[str, dict]] = {
    "gru_transformer": {  # paper 004: GRU -> transformer with a regression token
        "paper": {"hidden": 256, "gru_layers": 2, "blocks": 4, "heads": 4, "dropout": 0.2},
        "demo": {"hidden": 64, "gru_layers": 1, "blocks": 2, "heads": 4, "dropout": 0.1, "ff_dim": 128},
        "tiny": {"hidden": 16, "gru_layers": 1, "blocks": 1, "heads": 2, "dropout": 0.1, "ff_dim": 32},
    },
    "masked_rnn": {  # paper 000: the demo trains it at paper size (it is fast on CPU)
        "paper": {"hidden": 128, "max_len": 480, "fc_dim": 32, "rnn": "gru", "rnn_layers": 1},
        "demo": {"hidden": 128, "max_len": 480, "fc_dim": 32, "rnn": "gru", "rnn_layers": 1},
        "tiny": {"hidden": 16, "max_len": 480, "fc_dim": 32, "rnn": "gru", "rnn_layers": 1},
    },
    "lstm": {  # the MuSe 2022 baseline
        "paper": {"hidden": 128, "layers": 2},
        "demo": {"hidden": 64, "layers": 1},
        "tiny": {"hidden": 16, "layers": 1},
    },
    "mean_pool": {  # the naive baseline
        "paper": {"hidden": 256},
        "demo": {"hidden": 64},
        "tiny": {"hidden": 16},
    },
}


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
