"""Paired bootstrap of two runs or ensembles over the same videos: is A better than B?

  python tools/compare.py RUN_OR_ENSEMBLE_A RUN_OR_ENSEMBLE_B [--split test|val] [--resamples 1000] [--seed 0] [--json F]

Prints A - B in mean PCC and per emotion with 95% percentile intervals and two-sided p-values.
Reads only the two directories (predictions, labels.csv, dataset.json: `eri.runs`), so it works after
their data root moved or went. Refuses (exit 2) when A and B do not cover the same videos of the split
or were scored on different data (their dataset signatures differ: labels, splits or features).
"""

from __future__ import annotations

from functools import partial

from eri.commands import parser
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the result to this file")
    a = p.parse_args(argv)
    from eri.ensembles.compare import compare, format_comparison
    from eri.errors import EXIT_OK
    from eri.io import atomic_write_json

    res = compare(a.a, a.b, a.split, a.resamples, a.seed)
    print(format_comparison(res))
    if a.json:
        atomic_write_json(a.json, res)
    return EXIT_OK


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)

