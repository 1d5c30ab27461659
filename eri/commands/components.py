"""Print the components a config can name: ``eri list [--brief] [FAMILY ...]``.

Each family is the registry (or table) the config loader checks names against, so this is the list of
valid ``name:`` values: encoders (model.branches.N.encoder.name), fusions (model.fusion.name), extractors
(configs/extract/), combiners (ensemble combiner=), MMA backbones, losses, optimizers, label formats,
MMA datasets (readers), synthetic presets and ablation tables. A family's first line names its entries;
below it each registered entry has its one-line description, its size presets (model.preset, or
``preset:`` in an encoder) and its search knobs (``space`` keys of a search config, and the constructor
key each sets). ``--brief``: the first lines only.
"""

from __future__ import annotations

from functools import partial

from eri.commands import parser
from eri.cli import cli


FAMILIES = ("encoders", "encoder-sizes", "fusions", "extractors", "combiners", "mma-backbones", "losses",
            "optimizers", "label-formats", "mma-datasets", "synthetic-presets", "ablation-tables")


def families() -> dict:
    """Family -> its registry (`eri.registry.Registry`) or table of names (imports the model code: torch)."""
    from eri.data.labels import READERS as LABEL_FORMATS
    from eri.data.synthetic import PRESETS as SYNTHETIC
    from eri.ensembles.combiners import COMBINERS
    from eri.features.extractors import EXTRACTORS
    from eri.mma.data import READERS as MMA_DATASETS
    from eri.models.mma import BACKBONES
    from eri.models.encoders import ENCODERS
    from eri.models.fusion import FUSIONS
    from eri.search.ablate import TABLES
    from eri.training.losses import LOSSES
    from eri.training.task import OPTIMIZERS

    sizes = {size: None for entry in ENCODERS.entries() for size in entry.presets}
    found = {
        "encoders": ENCODERS, "encoder-sizes": sizes, "fusions": FUSIONS, "extractors": EXTRACTORS,
        "combiners": COMBINERS, "mma-backbones": BACKBONES, "losses": LOSSES, "optimizers": OPTIMIZERS,
        "label-formats": LABEL_FORMATS, "mma-datasets": MMA_DATASETS, "synthetic-presets": SYNTHETIC,
        "ablation-tables": TABLES,
    }
    assert set(found) == set(FAMILIES), "FAMILIES lists the families for --help before anything is imported"
    return {family: found[family] for family in FAMILIES}


def describe(family: str, table, brief: bool = False) -> list[str]:
    """``family: names`` and, for a registry, two-space-indented lines per entry (description, presets, knobs)."""
    from eri.registry import Registry

    lines = [f"{family}: {' '.join(sorted(table))}"]
    if brief or not isinstance(table, Registry):
        return lines
    width = max(map(len, table), default=0)
    for entry in sorted(table.entries(), key=lambda e: e.name):
        lines.append(f"  {entry.name:<{width}}  {entry.description}".rstrip())
        pad = " " * (width + 4)
        for preset, sizes in entry.presets.items():
            lines.append(f"{pad}preset {preset}: {' '.join(f'{k}={v}' for k, v in sizes.items())}")
        if entry.knobs:
            knobs = [k if k == key else f"{k} ({key})" for k, key in entry.knobs.items()]
            lines.append(f"{pad}search: {', '.join(knobs)}")
    return lines


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("family", nargs="*", metavar="FAMILY", help=f"only these (default: all): {', '.join(FAMILIES)}")
    p.add_argument("--brief", action="store_true", help="one line per family: the names only")
    a = p.parse_args(argv)
    unknown = [f for f in a.family if f not in FAMILIES]
    if unknown:
        p.error(f"unknown family {unknown[0]!r}; valid: {', '.join(FAMILIES)}")
    found = families()
    for family in a.family or FAMILIES:
        print("\n".join(describe(family, found[family], a.brief)))
    return 0


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 2 unknown family)."""
    return cli(partial(_run, prog=prog), argv)
