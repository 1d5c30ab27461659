"""Components by name, timm-style: a registry is a plain ``{name: class}`` dict (an entry may be a
``"module.Class"`` string, imported on first use so an optional dependency only matters to whoever
uses it), and `build` turns a config dict ``{name: ..., key: value}`` into an instance.

`build` checks the keys against the class's constructor before calling it, so a typo is an error
listing the valid keys, and a value the constructor rejects is a `ConfigError` naming where it came
from. Encoders, fusions, extractors and MMA backbones all go through it.
"""

from __future__ import annotations

import importlib
import inspect

from eri.errors import ConfigError, InputError


def resolve(registry: dict, name, kind: str) -> type:
    """``registry[name]`` as a class (importing a ``"module.Class"`` entry once)."""
    if name not in registry:
        raise ConfigError(f"unknown {kind} '{name}'; valid: {sorted(registry)}")
    cls = registry[name]
    if isinstance(cls, str):
        module, attr = cls.rsplit(".", 1)
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ImportError(f"{kind} '{name}': cannot import {registry[name]} ({e})") from e
        registry[name] = cls
    return cls


def config_keys(cls: type, fixed=()) -> list[str]:
    """The keyword arguments a config may give ``cls`` (its constructor's, minus ``fixed`` ones)."""
    params = inspect.signature(cls.__init__).parameters
    return [
        p for p, v in params.items()
        if p not in ("self", *fixed) and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)
    ]


def build(registry: dict, kind: str, spec: dict, where: str = "", **fixed):
    """Instantiate ``registry[spec['name']]`` with the rest of ``spec`` plus ``fixed`` arguments; an
    unknown name or key, or a value the constructor rejects, is a ConfigError naming ``where``."""
    prefix = f"{where}: " if where else ""
    if not isinstance(spec, dict):
        raise ConfigError(f"{prefix}{kind} must be a mapping like {{name: ..., key: value}}, got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name", None)
    try:
        cls = resolve(registry, name, kind)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None
    valid = config_keys(cls, fixed)
    unknown = sorted(set(spec) - set(valid))
    if unknown:
        raise ConfigError(f"{prefix}unknown key(s) {unknown} for {kind} '{name}'; valid keys: {['name', *valid]}")
    try:
        return cls(**fixed, **spec)
    except InputError:
        raise
    except (ValueError, TypeError, AssertionError) as e:  # e.g. heads that do not divide the width
        raise ConfigError(f"{prefix}{kind} '{name}' {spec}: {e}") from None
