"""Extract features from raw videos into the feature store that training reads.

  python tools/extract.py --config configs/extract/paper004.yaml --data-root DIR [--shard K/N] [key=value ...]

The dataset root holds the ABAW5 (data_info.csv) or MuSe 2022 (labels.csv + partition.csv) labels, or is a
plain folder of videos; media are found under it by id. Writes DIR/features/<stream>/ (or `out=...`) and
DIR/extraction_report.csv. Rerunning skips finished videos; a changed extractor config recomputes its stream.
--workers N decodes, detects and aligns in N processes while the main one runs the extractors.
--shard K/N (K = 0..N-1) processes every N-th video starting at K, e.g. a SLURM array:
  --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT ; then `--index-only` once (or let the last shard do it),
  with the same config: --index-only refuses settings the stored streams were not extracted with.
Exit status: 0 all videos done, 1 some failed or files damaged (see the report), 2 bad input/config, 130 interrupted.
"""

from __future__ import annotations

import sys
from functools import partial

from eri.commands import parser
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    p.add_argument("--config", required=True, help="extraction YAML (see configs/extract/)")
    p.add_argument("--data-root", required=True, help="dataset root (labels + media, or a folder of videos)")
    p.add_argument("--shard", help="K/N: this process takes videos K, K+N, K+2N, ... (0-based K)")
    p.add_argument("--limit", type=int, help="only the first N videos of this shard (quick checks)")
    p.add_argument("--index-only", action="store_true", help="only rebuild each stream's index.csv")
    p.add_argument("--workers", type=int, default=0,
                   help="decode/detect/align in N worker processes while this one runs the extractors (same files)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. faces.every_k=5 device=cuda")
    args = p.parse_args(argv)
    from eri.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL
    from eri.features.config import load_extract_config
    from eri.features.listing import parse_shard
    from eri.features.pipeline import Extraction

    cfg = load_extract_config(args.config, args.overrides)
    shard = parse_shard(args.shard)
    job = Extraction(cfg, args.data_root, progress=not args.no_progress, load=not args.index_only)
    if args.index_only:
        damaged = job.index_only()  # refused when the stored streams were extracted with other settings
        for s in job.streams:
            print(f"{s.name}: {len(job.store.index(s.name))} videos indexed")
        for row in job.report:
            print(f"warning: {row['error']}", file=sys.stderr)
        job.write_report(shard)
        return EXIT_PARTIAL if damaged else EXIT_OK
    res = job.run(shard, args.limit, args.workers)
    fps = res["frames"] / max(res["seconds"], 1e-9)
    print(
        f"{res['n_videos']} videos: {res['videos']} processed, {res['skipped']} already done, "
        f"{len(res['failed'])} failed; {res['frames']} frames in {res['seconds']:.1f} s ({fps:.1f} frames/s); "
        f"report: {res['report']}"
    )
    for line in res["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    if res["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_PARTIAL if res["failed"] else EXIT_OK


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)

