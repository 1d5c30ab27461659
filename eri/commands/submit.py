"""Write the challenge submission CSV of a run or an ensemble directory.

  python tools/submit.py RUN_OR_ENSEMBLE_DIR --out submission.csv [--clip]

The Test rows of the label file (ABAW5: data_info.csv, File_ID as written there, e.g. [00004]; MuSe 2022:
partition.csv), in its order, with the 7 emotions in the official order. Refused (exit 2, one line, nothing
written) when the labels or feature store changed since training (the run's dataset.json), a Test video has
no prediction, a prediction is NaN, or a value lies outside [0, 1] (--clip clips an unbounded combiner's).
"""

from __future__ import annotations

from functools import partial

from eri.commands import parser
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("source", help="a run directory (tools/train.py) or an ensemble directory (tools/ensemble.py)")
    p.add_argument("--out", required=True, help="the submission CSV to write")
    p.add_argument("--clip", action="store_true", help="clip values to [0, 1] instead of refusing them")
    a = p.parse_args(argv)
    from eri.ensembles.submission import submit
    from eri.errors import EXIT_OK

    res = submit(a.source, a.out, a.clip)
    kind = "ensemble" if res["ensemble"] else "run"
    print(f"{res['out']}: {res['rows']} Test rows of {res['labels']} from the {kind} {a.source}")
    return EXIT_OK


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)

