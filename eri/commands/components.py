"""Print the components a config can name, one family per line: ``eri list [FAMILY ...]``.

Each family is the registry (or table) the config loader checks names against, so this is the list of
valid ``name:`` values: encoders (model.branches.N.encoder.name), fusions (model.fusion.name), extractors
(configs/extract/), combiners (ensemble combiner=), MMA backbones, losses, optimizers, label formats,
synthetic presets and ablation tables.
"""

from __future__ import annotations

from functools import partial

from eri.commands import parser
from eri.cli import cli


FAMILIES = ("encoders", "encoder-sizes", "fusions", "extractors", "combiners", "mma-backbones", "losses",
            "optimizers", "label-formats", "mma-datasets", "synthetic-presets", "ablation-tables")


def families() -> dict[str, list[str]]:
    """Family -> sorted registered names (imports the model code: torch)."""
    from eri.data.labels import READERS as LABEL_FORMATS
    from eri.data.synthetic import PRESETS as SYNTHETIC
    from eri.ensembles.combiners import COMBINERS
    from eri.features.extractors import EXTRACTORS
    from eri.mma.data import READERS as MMA_DATASETS
    from eri.mma.model import BACKBONES
    from eri.models.encoders import ENCODERS
    from eri.models.fusion import FUSIONS
    from eri.models.presets import ENCODER_PRESETS
    from eri.search.ablate import TABLES
    from eri.training.losses import LOSSES
    from eri.training.task import OPTIMIZERS

    sizes = {size for presets in ENCODER_PRESETS.values() for size in presets}
    found = {
        "encoders": ENCODERS, "encoder-sizes": sizes, "fusions": FUSIONS, "extractors": EXTRACTORS,
        "combiners": COMBINERS, "mma-backbones": BACKBONES, "losses": LOSSES, "optimizers": OPTIMIZERS,
        "label-formats": LABEL_FORMATS, "mma-datasets": MMA_DATASETS, "synthetic-presets": SYNTHETIC,
        "ablation-tables": TABLES,
    }
    assert set(found) == set(FAMILIES), "FAMILIES lists the families for --help before anything is imported"
    return {family: sorted(found[family]) for family in FAMILIES}


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("family", nargs="*", metavar="FAMILY", help=f"only these (default: all): {', '.join(FAMILIES)}")
    a = p.parse_args(argv)
    unknown = [f for f in a.family if f not in FAMILIES]
    if unknown:
        p.error(f"unknown family {unknown[0]!r}; valid: {', '.join(FAMILIES)}")
    found = families()
    for family in a.family or FAMILIES:
        print(f"{family}: {' '.join(found[family])}")
    return 0


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 2 unknown family)."""
    return cli(partial(_run, prog=prog), argv)
