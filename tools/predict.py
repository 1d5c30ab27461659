#!/usr/bin/env python
"""Predict the 7 intensities for new videos with a trained run, and draw one figure per video.

  python tools/predict.py --checkpoint RUN_DIR_OR_CKPT --video A.mp4 [B.webm ...] --out DIR

RUN_DIR_OR_CKPT: a run directory (runs/NAME: its best checkpoint) or a .ckpt inside its checkpoints/.

Extracts exactly the streams the run was trained on, with the extractor, face and decode settings recorded
in its training store (features/<stream>/meta.json under the run's data.root). Writes DIR/predictions.csv
(video, File_ID, 7 intensities, valid frames per stream, note), DIR/<id>.png (per-frame signals, the
regression token's attention over time, the predictions) and DIR/store/ (the extracted features + report).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eri.errors import cli  # noqa: E402
from eri.features.predict import predict  # noqa: E402


def _run(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run directory or a .ckpt inside its checkpoints/")
    p.add_argument("--video", required=True, nargs="+", help="video file(s)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (extraction)")
    p.add_argument("--no-figures", action="store_true")
    args = p.parse_args(argv)
    df = predict(args.checkpoint, args.video, args.out, device=args.device, figures=not args.no_figures)
    with __import__("pandas").option_context("display.width", 160, "display.max_columns", 20):
        print(df.drop(columns=["video"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {Path(args.out) / 'predictions.csv'}")
    return 1 if df["note"].fillna("").str.startswith("extraction failed").any() else 0


def main(argv=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
