"""A search space over one base training config, as one declarative table.

Every searchable setting is an encoder knob (per branch: declared with each encoder's registration,
``@ENCODERS.register(name, knobs={space key: constructor key})``, and gathered by `encoder_knobs`) or
a row of `CONFIG_KNOBS` (where it lives in the training config and how a parameter becomes a config
value and back). Three things are derived from those and nothing else:

- `Space.sample(trial)`: Optuna parameters for a trial;
- `Space.updates(params)`: the trial's config, as structured ``{config key: value}`` updates of the
  base config (no strings re-parsed as YAML);
- `Space.paper_params()`: the base config read back into parameters, enqueued as trial 0 so the
  study's best is never below the paper setting (a base the space cannot express is an error).

A new searchable key is one knob on an encoder's registration (or one `CONFIG_KNOBS` row); the valid
``space`` keys (`SPACE_KEYS`) follow. In a search config's ``space`` a list is a categorical choice,
``{low, high, log}`` a range (ints stay ints); an absent key is not searched.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from eri.config import load_config
from eri.errors import ConfigError

FIXED_KEYS = {
    "branches": "candidate branches, name -> streams; a trial uses a non-empty subset (parameter 'streams')",
    "min_branches": "fewest branches in a subset (default 1)",
    "max_branches": "most branches in a subset (default all)",
    "encoder": "per branch: encoder name",
}


@dataclass(frozen=True)
class EncoderKnob:
    """A per-branch encoder setting: its space key and its key in each encoder's config (``{encoder: key}``,
    from the encoders' registrations; an encoder without it is not searched on it)."""

    space_key: str
    keys: dict

    def key(self, encoder: str) -> str | None:
        return self.keys.get(encoder)


def encoder_knobs() -> tuple[EncoderKnob, ...]:
    """Every registered encoder knob, in the order encoders and their knobs were registered (the order
    trials suggest them in)."""
    from eri.models.encoders import ENCODERS

    keys: dict[str, dict] = {}
    for entry in ENCODERS.entries():
        for space_key, key in entry.knobs.items():
            if space_key in FIXED_KEYS or any(space_key == k.space_key for k in CONFIG_KNOBS):
                raise ValueError(f"encoder '{entry.name}': knob '{space_key}' is a whole-space key; name it otherwise")
            keys.setdefault(space_key, {})[entry.name] = key
    return tuple(EncoderKnob(k, v) for k, v in keys.items())


@dataclass(frozen=True)
class ConfigKnob:
    """A whole-config setting: the config key it sets; ``to_config(value, space)`` and
    ``from_config(config value)`` translate between the parameter and the config."""

    space_key: str
    key: str
    help: str
    to_config: Callable = lambda value, space: value
    from_config: Callable = lambda value: value


def _fusion(name: str, space: "Space") -> dict:
    """A fusion by name, keeping the base fusion's keys the new one accepts (e.g. head_hidden)."""
    from eri.models.fusion import FUSIONS

    keep = FUSIONS.config_keys(name)
    return {"name": name, **{k: v for k, v in space.base_fusion.items() if k != "name" and k in keep}}


def _loss_mix(w: float, space: "Space") -> dict:
    return {k: v for k, v in {"l2": round(1.0 - float(w), 12), "pcc": float(w)}.items() if v > 0}


def _pcc_weight(loss) -> float:
    loss = dict(loss)
    if set(loss) - {"l2", "pcc"} or abs(sum(loss.values()) - 1.0) > 1e-9:
        raise ConfigError(f"the base config's loss {loss} is not an l2/pcc mix summing to 1; drop loss_pcc from the space")
    return float(loss.get("pcc", 0.0))


CONFIG_KNOBS = (
    ConfigKnob("fusion", "model.fusion", "fusion name", _fusion, lambda fusion: fusion["name"]),
    ConfigKnob("lr", "optim.lr", "learning rate", from_config=float),
    ConfigKnob("weight_decay", "optim.weight_decay", "weight decay", from_config=float),
    ConfigKnob("loss_pcc", "loss", "loss mix: weight of 1 - PCC, the L2 loss gets 1 - it", _loss_mix, _pcc_weight),
)


class _SpaceKeys(Mapping):
    """The valid ``space`` keys with what each means, read from the registry when asked (so an encoder
    registered after import adds its knobs)."""

    def _keys(self) -> dict:
        knobs = {k.space_key: "per branch: " + ", ".join(f"{e}.{key}" for e, key in k.keys.items())
                 for k in encoder_knobs()}
        return {**FIXED_KEYS, **knobs, **{k.space_key: k.help for k in CONFIG_KNOBS}}

    def __getitem__(self, key):
        return self._keys()[key]

    def __iter__(self):
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


SPACE_KEYS = _SpaceKeys()


def _suggest(trial, name: str, spec):
    if isinstance(spec, (list, tuple)):
        return trial.suggest_categorical(name, list(spec))
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if isinstance(low, int) and isinstance(high, int):
        return trial.suggest_int(name, low, high, log=log)
    return trial.suggest_float(name, float(low), float(high), log=log)


def _contains(spec, value) -> bool:
    if isinstance(spec, (list, tuple)):
        return value in list(spec)
    return spec["low"] <= value <= spec["high"]


def _default(encoder: str, key: str):
    """An encoder constructor's default for ``key`` (what a config that omits it gets)."""
    import inspect

    from eri.models.encoders import ENCODERS

    p = inspect.signature(ENCODERS.resolve(encoder).__init__).parameters.get(key)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


class Space:
    """The search space of one search config, over one base training config."""

    def __init__(self, scfg: DictConfig):
        self.space = OmegaConf.to_container(scfg.space, resolve=True)
        unknown = sorted(set(self.space) - set(SPACE_KEYS))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in space; valid keys: {list(SPACE_KEYS)}")
        self.base_path, self.base_overrides = scfg.base, list(scfg.base_overrides)
        self.base = load_config(self.base_path, self.base_overrides)
        self.base_branches = OmegaConf.to_container(self.base.model.branches, resolve=True)
        self.base_fusion = OmegaConf.to_container(self.base.model.fusion, resolve=True)

    # ---------------------------------------------------------------- branches
    def subsets(self) -> list[str]:
        names = list(self.space["branches"])
        lo, hi = int(self.space.get("min_branches", 1)), int(self.space.get("max_branches", len(names)))
        return ["+".join(c) for k in range(max(lo, 1), hi + 1) for c in itertools.combinations(names, k)]

    def _base_branch(self, name: str) -> dict | None:
        """The base config's branch over the same streams as candidate ``name``."""
        streams = list(self.space["branches"][name])
        return next((b for b in self.base_branches if list(b["streams"]) == streams), None)

    def _base_encoder_name(self, name: str) -> str:
        base = self._base_branch(name)
        if base:
            return base["encoder"]["name"]
        names = {b["encoder"]["name"] for b in self.base_branches}
        if len(names) != 1:
            raise ConfigError(f"{self.base_path}: branches use several encoders {sorted(names)}; add 'encoder' to the space")
        return names.pop()

    def _encoder(self, name: str, encoder: str) -> dict:
        """The base branch's encoder when it is that encoder, else that encoder at the base's size preset."""
        from eri.models.presets import ENCODER_PRESETS, encoder_preset

        base = self._base_branch(name)
        if base and base["encoder"]["name"] == encoder:
            return dict(base["encoder"])
        preset = self.base.model.preset
        return encoder_preset(encoder, preset) if preset in ENCODER_PRESETS.get(encoder, {}) else {"name": encoder}

    # ---------------------------------------------------------------- the three derivations
    def sample(self, trial) -> dict:
        """One trial's parameters."""
        sp, params = self.space, {}
        if "branches" in sp:
            params["streams"] = _suggest(trial, "streams", self.subsets())
            for name in params["streams"].split("+"):
                encoder = _suggest(trial, f"{name}.encoder", sp["encoder"]) if "encoder" in sp else self._base_encoder_name(name)
                if "encoder" in sp:
                    params[f"{name}.encoder"] = encoder
                for knob in encoder_knobs():
                    if knob.space_key in sp and knob.key(encoder):
                        params[f"{name}.{knob.space_key}"] = _suggest(trial, f"{name}.{knob.space_key}", sp[knob.space_key])
        for knob in CONFIG_KNOBS:
            if knob.space_key in sp:
                params[knob.space_key] = _suggest(trial, knob.space_key, sp[knob.space_key])
        return params

    def updates(self, params: dict) -> dict:
        """Parameters -> structured updates of the base config."""
        out = {}
        if "streams" in params:
            branches = []
            for name in params["streams"].split("+"):
                encoder = params.get(f"{name}.encoder") or self._base_encoder_name(name)
                enc = self._encoder(name, encoder)
                for knob in encoder_knobs():
                    if f"{name}.{knob.space_key}" in params:
                        enc[knob.key(encoder)] = params[f"{name}.{knob.space_key}"]
                branch = {"name": name, "streams": list(self.space["branches"][name]), "encoder": enc}
                base = self._base_branch(name) or {}
                if base.get("center") is not None:
                    branch["center"] = base["center"]
                branches.append(branch)
            out["model.branches"] = branches
        for knob in CONFIG_KNOBS:
            if knob.space_key in params:
                out[knob.key] = knob.to_config(params[knob.space_key], self)
        return out

    def paper_params(self) -> dict:
        """The base config expressed as this space's parameters (enqueued as the first trial)."""
        sp, params = self.space, {}

        def put(name, key, value):
            if not _contains(sp[key], value):
                raise ConfigError(
                    f"the base config {self.base_path} has {name} = {value!r}, outside the search space "
                    f"space.{key} = {sp[key]}: add it so the paper setting can be trial 0"
                )
            params[name] = value

        if "branches" in sp:
            names = []
            for b in self.base_branches:
                match = [n for n, s in sp["branches"].items() if list(s) == list(b["streams"])]
                if not match:
                    raise ConfigError(
                        f"the base config {self.base_path} has a branch over {list(b['streams'])}, "
                        f"which is not a candidate in space.branches {dict(sp['branches'])}"
                    )
                names.append(match[0])
            subset = "+".join(n for n in sp["branches"] if n in names)
            if subset not in self.subsets():
                raise ConfigError(f"the base config's branches {subset} are outside min/max_branches of the space")
            params["streams"] = subset
            for name in subset.split("+"):
                enc = self._base_branch(name)["encoder"]
                if "encoder" in sp:
                    put(f"{name}.encoder", "encoder", enc["name"])
                for knob in encoder_knobs():
                    key = knob.key(enc["name"])
                    if knob.space_key in sp and key:
                        put(f"{name}.{knob.space_key}", knob.space_key, enc.get(key, _default(enc["name"], key)))
        for knob in CONFIG_KNOBS:
            if knob.space_key in sp:
                put(knob.space_key, knob.space_key, knob.from_config(_get(self.base, knob.key)))
        return params

    def trial_config(self, updates: dict, out, overrides: list[str] = ()) -> DictConfig:
        """The base config with a trial's updates (and ``overrides``, e.g. a shorter budget) at ``out``."""
        return load_config(self.base_path, [*self.base_overrides, *overrides, f"out={out}"], updates)


def _get(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value
