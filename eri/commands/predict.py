"""Predict the 7 intensities for new videos with a trained model, and draw one figure per video.

  python tools/predict.py --checkpoint MODEL --video A.mp4 [B.webm ...] --out DIR

MODEL: a model file (runs/NAME/model.ckpt, or any checkpoint the run wrote) or a run directory. The
file is enough: it carries the architecture, the standardisation statistics, the input policy, the
mean training label and each stream's extraction settings, so new videos are extracted exactly like
the training data. Writes DIR/predictions.csv (video, File_ID, 7 intensities, valid frames per stream,
note), DIR/<id>.png (per-frame signals, the regression token's attention over time, the predictions)
and DIR/store/ (the extracted features + report). A video under the valid-frame minimum gets the mean
training label, as in training; one whose extraction failed gets NaN (exit code 1).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from eri.commands import parser
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("--checkpoint", required=True, help="model file (model.ckpt or a run's .ckpt) or run directory")
    p.add_argument("--video", required=True, nargs="+", help="video file(s)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (extraction and model)")
    p.add_argument("--no-figures", action="store_true")
    args = p.parse_args(argv)
    from eri.errors import EXIT_OK, EXIT_PARTIAL
    from eri.inference import load_model

    device = args.device if args.device != "auto" else ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    predictor = load_model(args.checkpoint, device)  # first: a refused file costs no extraction
    predictor.extraction(device)  # a model that cannot read new videos is refused before any work
    df = predictor.predict(args.video, args.out, device=device, figures=not args.no_figures)
    with __import__("pandas").option_context("display.width", 160, "display.max_columns", 20):
        print(df.drop(columns=["video"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {Path(args.out) / 'predictions.csv'}")
    return EXIT_PARTIAL if df["note"].fillna("").str.startswith("extraction failed").any() else EXIT_OK


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)

