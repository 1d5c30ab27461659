"""Write a synthetic Hume-Reaction-like dataset (data_info.csv + feature store) and print its summary.

    python tools/make_synthetic.py --out data/synthetic-small --preset hume-small --seed 0 [--proxy]
    python tools/make_synthetic.py --out data/small-faces --preset small-faces --workers 8

``--out`` must be a new or empty folder: the generator never writes into a folder holding files it did
not write (your own data stays untouched). Re-running with the same arguments resumes an interrupted
run in its own folder (videos already written are skipped).
``--proxy`` also runs the linear-probe calibration check (ridge on mean vs peak pooling, per stream and
all streams concatenated) and prints its table.
The ``*-faces`` presets (tiny-faces, small-faces) write face videos (``videos/<id>.mp4``) instead of
features: extract them (tools/extract.py) before training on them; ``--proxy`` needs features.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    from eri.data.synthetic import PRESETS  # numpy + pandas (~0.4 s): the preset names for --help

    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="dataset root: a new or empty folder (or one this tool started)")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="size and knobs (default: tiny)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0,
                    help="render face videos (*-faces presets) in N processes: the same files")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--proxy", action="store_true", help="also run the ridge mean-vs-peak pooling check")
    args = ap.parse_args(argv)
    from eri.constants import EMOTIONS
    from eri.data.synthetic import generate, proxy_scores
    from eri.errors import ConfigError

    t0 = time.time()
    s = generate(args.out, preset=args.preset, seed=args.seed, progress=not args.no_progress, workers=args.workers)
    print(f"wrote {args.out}: preset {s['preset']}, seed {s['seed']}, config_hash {s['config_hash']} "
          f"({s['_generated_now']} videos generated now, {time.time() - t0:.1f} s)")
    for split, c in s["counts"].items():
        print(f"  {split:5s}: {c['videos']:6d} videos, {c['subjects']:5d} subjects, "
              f"{c['under_50_valid_frames']} with < 50 valid frames, ceiling {s['ceiling'][split]}")
    st = s["label_stats"]["train"] or s["label_stats"]["all"]
    print("  train label means: " + ", ".join(f"{e} {st['means'][e]:.3f}" for e in EMOTIONS))
    print(f"  rows with a 0: {st['zero_fraction']:.3f}; Anxiety-Fear r: {st['anxiety_fear_r']:.3f}")
    v = s["video_stats"]
    print(f"  mean duration {v['mean_duration_s']} s, mean frames {v['mean_frames']}, "
          f"no-face frames {v['noface_frame_fraction']:.4f}")
    if "face_knobs" in s:
        print(f"  face videos in {args.out}/videos (hidden cues: {s['hidden_cues']}); extract features "
              f"(tools/extract.py --data-root {args.out}) before training on them")
    if args.proxy:
        if "face_knobs" in s:
            raise ConfigError(f"--proxy needs features; preset {args.preset} writes face videos")
        print(proxy_scores(args.out).to_string(index=False))
    return 0


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)

