"""Every shipped config resolves exactly as recorded in tests/data/resolved_configs.json: training, MMA
and extraction configs, every ablation row under every preset, each search config's base and trial 0,
each ensemble member (tests/resolved.py). A refactor of config loading, composition, presets or
registries must leave them all equal. After an intended change, regenerate the file with
``python tests/resolved.py tests/data/resolved_configs.json`` and review its diff."""

import json

from conftest import ROOT
from resolved import resolve_all

RECORDED = ROOT / "tests" / "data" / "resolved_configs.json"


def _differences(want, got, key: str = "") -> list[str]:
    """The dotted keys where two resolved configs differ, with both values."""
    if isinstance(want, dict) and isinstance(got, dict):
        return [d for k in sorted(set(want) | set(got), key=str)
                for d in _differences(want.get(k, "<absent>"), got.get(k, "<absent>"), f"{key}.{k}" if key else str(k))]
    return [] if want == got and type(want) is type(got) else [f"{key}: recorded {want!r}, now {got!r}"]


def test_differences_name_the_changed_keys():
    assert _differences({"a": {"b": 1, "c": [1]}}, {"a": {"b": 1.0, "c": [2]}, "d": 0}) == [
        "a.b: recorded 1, now 1.0", "a.c: recorded [1], now [2]", "d: recorded '<absent>', now 0"]


def test_every_shipped_config_resolves_as_recorded(monkeypatch):
    monkeypatch.chdir(ROOT)
    want, got = json.loads(RECORDED.read_text()), resolve_all()
    problems = [f"{name}: no longer resolved" for name in sorted(set(want) - set(got))]
    problems += [f"{name}: new, not recorded" for name in sorted(set(got) - set(want))]
    problems += [f"{name}: {d}" for name in sorted(set(want) & set(got)) for d in _differences(want[name], got[name])]
    assert not problems, ("resolved configs changed (if intended: python tests/resolved.py "
                          "tests/data/resolved_configs.json, then review the diff):\n" + "\n".join(problems[:60]))
