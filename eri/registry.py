"""Components by name, timm-style: one `Registry` per family (encoders, fusions, combiners, MMA
backbones and dataset readers, optimisers, losses, extractors), and `build`, which turns a config
dict ``{name: ..., key: value}`` into an instance.

An entry is declared once, where its component is defined (``@ENCODERS.register(...)`` on the class,
or ``ENCODERS.add(name, cls, ...)`` for a class defined elsewhere, e.g. a torch optimiser), and carries
everything the rest of eri derives from it, so a new component is its file and nothing else:

- its constructor: a class or function, or a ``"module.Class"`` string imported on first use (an
  optional dependency then only matters to whoever uses that entry);
- its size presets ``{preset: {key: value}}`` (`eri.models.presets` expands ``preset: demo``);
- its search knobs ``{space key: constructor key}`` (`eri.search.space` samples them);
- a one-line description (`eri list`; by default the first line of the docstring).

A registry reads like the ``{name: class}`` dict it replaced: ``name in R``, iteration in registration
order, ``R[name]`` (the constructor, imported if lazy). It is written only through `register` / `add`.
`build` checks a config's keys against the constructor before calling it, so a typo is an error
listing the valid keys, and a value the constructor rejects is a `ConfigError` naming where it came from.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field

from eri.errors import ConfigError, InputError


@dataclass
class Entry:
    name: str
    target: object  # class or function; a "module.Class" string until first resolved
    presets: dict = field(default_factory=dict)  # preset name -> {constructor key: value}
    knobs: dict = field(default_factory=dict)  # search space key -> constructor key
    description: str = ""

    @property
    def module(self) -> str:
        """The module that defines (and, for a decorated class, registers) the component."""
        return self.target.rsplit(".", 1)[0] if isinstance(self.target, str) else self.target.__module__


class Registry(Mapping):
    """Named components of one kind. ``fixed``: constructor arguments the code supplies (an encoder's
    ``in_dim``), never config keys."""

    def __init__(self, kind: str, fixed: tuple[str, ...] = ()):
        self.kind, self.fixed = kind, tuple(fixed)
        self._entries: dict[str, Entry] = {}

    # ------------------------------------------------------------------ writing
    def add(self, name: str, target, *, presets: dict | None = None, knobs: dict | None = None,
            description: str | None = None) -> Entry:
        """Register ``target`` (a constructor or a lazy ``"module.Class"``) as ``name``; a name taken by
        another component is refused, and so are presets or knobs naming keys the constructor lacks."""
        old = self._entries.get(name)
        if old is not None and old.target is not target:
            raise ValueError(f"{self.kind} '{name}' is already registered ({old.module}); choose another name")
        if description is None:
            doc = "" if isinstance(target, str) else inspect.getdoc(target) or ""
            description = doc.strip().split("\n\n")[0].replace("\n", " ").removesuffix(".")
        entry = Entry(name, target, {p: dict(s) for p, s in (presets or {}).items()}, dict(knobs or {}), description)
        if not isinstance(target, str):
            self._check(entry, target)
        self._entries[name] = entry
        return entry

    def register(self, name: str, **kw):
        """Class (or function) decorator: ``@R.register(name, presets=..., knobs=..., description=...)``."""
        def deco(target):
            self.add(name, target, **kw)
            return target

        return deco

    def remove(self, name: str) -> None:
        """Drop an entry (a test's temporary component)."""
        self._entries.pop(name, None)

    def _check(self, entry: Entry, target) -> None:
        valid = config_keys(target, self.fixed)
        for where, keys in [*((f"preset '{p}'", s) for p, s in entry.presets.items()), ("knobs", entry.knobs.values())]:
            unknown = sorted(set(keys) - set(valid))
            if unknown:
                raise ValueError(f"{self.kind} '{entry.name}': {where} names {unknown}, not arguments of "
                                 f"{target.__name__}; valid: {valid}")

    # ------------------------------------------------------------------ reading
    def __getitem__(self, name: str):
        if name not in self._entries:
            raise KeyError(name)
        return self.resolve(name)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    def entry(self, name: str) -> Entry:
        """The entry of ``name`` (a lazy one is not imported), or the one-line unknown-name error."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'; valid: {sorted(self._entries)}")
        return self._entries[name]

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def resolve(self, name: str):
        """The constructor of ``name``, importing a ``"module.Class"`` entry once."""
        entry = self.entry(name)
        if isinstance(entry.target, str):
            module, attr = entry.target.rsplit(".", 1)
            try:
                target = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ImportError(f"{self.kind} '{name}': cannot import {entry.target} ({e})") from e
            self._check(entry, target)
            entry.target = target
        return entry.target

    def config_keys(self, name: str) -> list[str]:
        """The keys a config may give ``name`` (its constructor's, minus the fixed ones)."""
        return config_keys(self.resolve(name), self.fixed)

    def build(self, spec: dict, where: str = "", **fixed):
        """An instance from ``{name, key: value}`` (see `build`)."""
        return build(self, self.kind, spec, where, **fixed)

    @property
    def presets(self) -> Mapping:
        """Live read-only view ``{name: {preset: sizes}}`` of the entries that have presets (the inner
        dicts are the entries' own)."""
        return _Presets(self)


class _Presets(Mapping):
    def __init__(self, registry: Registry):
        self._registry = registry

    def __getitem__(self, name):
        entry = self._registry._entries.get(name)
        if entry is None or not entry.presets:
            raise KeyError(name)
        return entry.presets

    def __iter__(self):
        return (e.name for e in self._registry._entries.values() if e.presets)

    def __len__(self) -> int:
        return sum(1 for _ in self)


# ---------------------------------------------------------------------------- any {name: class} mapping
def resolve(registry: Mapping, name, kind: str):
    """``registry[name]`` as a class (a `Registry`, or a plain dict whose ``"module.Class"`` entries are
    imported once); an unknown name is a one-line ConfigError listing the valid ones."""
    if isinstance(registry, Registry):
        return registry.resolve(name)
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


def config_keys(cls, fixed=()) -> list[str]:
    """The keyword arguments a config may give ``cls`` (a class's constructor or a function's,
    minus ``fixed`` ones)."""
    params = inspect.signature(cls.__init__ if isinstance(cls, type) else cls).parameters
    return [
        p for p, v in params.items()
        if p not in ("self", *fixed) and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)
    ]


def build(registry: Mapping, kind: str, spec: dict, where: str = "", **fixed):
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
