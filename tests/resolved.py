"""Every shipped config resolved, as one JSON-able dict: training, MMA and extraction configs, every
ablation row of every table under every preset, each search config's base and trial 0 (the paper
setting), each ensemble member. tests/test_reproducible.py compares it with
tests/data/resolved_configs.json; after an intended change, regenerate that file with
``python tests/resolved.py tests/data/resolved_configs.json`` (from the repository root) and review its diff."""

from __future__ import annotations

import glob
import json
import sys

from omegaconf import OmegaConf


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def resolve_all() -> dict:
    """``kind:file[:what]`` -> the resolved config (run from the repository root)."""
    from eri.config import load_config
    from eri.ensembles.config import load_ensemble_config
    from eri.features.config import load_extract_config
    from eri.mma.config import load_mma_config
    from eri.search import ablate
    from eri.search.space import Space
    from eri.search.study import load_search_config

    out = {}
    for p in sorted(glob.glob("configs/*.yaml")):
        out[f"train:{p}"] = _plain(load_config(p))
    for p in sorted(glob.glob("configs/mma/*.yaml")):
        out[f"mma:{p}"] = _plain(load_mma_config(p))
    for p in sorted(glob.glob("configs/extract/*.yaml")):
        out[f"extract:{p}"] = _plain(load_extract_config(p))
    for name, table in ablate.TABLES.items():
        for preset in ablate.PRESETS:
            for row in table.rows:
                out[f"ablate:{name}:{preset}:{row.name}"] = _plain(ablate.resolve(table, row, preset, 0))
    for p in sorted(glob.glob("configs/search/*.yaml")):
        scfg = load_search_config(p)
        space = Space(scfg)
        out[f"search:{p}:base"] = _plain(space.base)
        trial0 = load_config(space.base_path, list(scfg.base_overrides), space.updates(space.paper_params()))
        out[f"search:{p}:trial0"] = _plain(trial0)
    for p in sorted(glob.glob("configs/ensemble/*.yaml")):
        ecfg = load_ensemble_config(p)
        for i, m in enumerate(ecfg.members):
            if m.get("config"):
                out[f"ensemble:{p}:{i}"] = _plain(load_config(m.config, [*m.get("overrides", []), *ecfg.overrides]))
    return out


def dump(path: str) -> None:
    with open(path, "w") as f:
        json.dump(resolve_all(), f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    dump(sys.argv[1])
