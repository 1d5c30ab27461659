"""What the tools say while they work: extraction progress in frames (sequential and with workers),
one ``[k/N] ... (time, ETA)`` line per finished run of ablate / ensemble / search and one table at the
end, no per-run tables, no Lightning advertising; the README's ``--runs a b key=value`` form; a failed
predict leaves nothing that changes the next call into the same ``--out``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_bad_inputs import tone_video
from test_extract_pipeline import FACE_CFG, _three_clips

from eri.errors import EXIT_OK
from eri.features.config import load_extract_config
from eri.features.faceflow import Decoded, FaceSummary, face_flow
from eri.features.pipeline import Extraction
from eri.progress import Units, duration
from tools.ablate import main as ablate_main
from tools.ensemble import main as ensemble_main
from tools.ensemble import split_runs
from tools.evaluate import main as evaluate_main
from tools.search import main as search_main

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\[(\d+)/(\d+)\] .+: .+ \((?:\d+[hms][\dms]*|cached)(?:, ETA \d+[hms][\dms]*)?\)$")
NOISE = ("litmodels", "litlogger", "Tip:", "GPU available", "TPU available", "HPU available", "LOCAL_RANK")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[")]


# ----------------------------------------------------------------------------- extraction
def test_extraction_progress_counts_frames_chunk_by_chunk(tmp_path):
    clips = _three_clips(tmp_path / "clips")  # 12 + 30 + 30 frames
    (tmp_path / "x.yaml").write_text(FACE_CFG.format(k=3, mb=0.2))
    cfg = load_extract_config(tmp_path / "x.yaml", [f"out={tmp_path / 'seq'}"])
    job = Extraction(cfg, clips, progress=True)
    stats = job.run()
    assert not stats["failed"] and stats["frames"] == 72
    assert job.bar.bar.unit == "frame" and job.bar.n_done == 72 and job.bar.total == 72

    # the bar moves once per decoded chunk (here 1-2 frames), with the container's frame count
    events = list(face_flow(clips / "b.mp4", cfg, job.detector, as_numpy=True))
    ticks = [e for e in events if isinstance(e, Decoded)]
    summary = next(e for e in events if isinstance(e, FaceSummary))
    assert len(ticks) >= 10 and [t.frames for t in ticks] == sorted(t.frames for t in ticks)
    assert ticks[-1].frames == summary.n_frames == 30 and {t.expected for t in ticks} == {30}


def test_extraction_progress_counts_frames_with_a_worker(tmp_path):
    clips = _three_clips(tmp_path / "clips")
    (tmp_path / "x.yaml").write_text(FACE_CFG.format(k=3, mb=1))
    cfg = load_extract_config(tmp_path / "x.yaml", [f"out={tmp_path / 'w'}", "extract_in=workers"])
    job = Extraction(cfg, clips, progress=True)
    assert job.run(workers=1)["frames"] == 72
    assert job.bar.n_done == 72 and job.bar.total == 72


def test_an_audio_only_extraction_counts_videos(tmp_path):
    for name in ("a", "b"):
        tone_video(tmp_path / "v" / f"{name}.mp4")
    (tmp_path / "a.yaml").write_text("extractors:\n  - {name: audio}\n")
    job = Extraction(load_extract_config(tmp_path / "a.yaml"), tmp_path / "v", progress=True)
    job.run()
    assert job.bar.bar.unit == "video" and job.bar.n_done == 2 and job.bar.total == 2


# ----------------------------------------------------------------------------- k/N lines
def test_units_lines_leave_cached_units_out_of_the_eta():
    said = []
    u = Units(4, said.append)
    u.done("row 'a' seed 0", "val 0.5000", trained=False, seconds=0.0)
    assert said[-1] == "[1/4] row 'a' seed 0: val 0.5000 (cached)"  # no ETA before a trained unit
    u.done("row 'b' seed 0", "val 0.5069", seconds=252)
    assert said[-1] == "[2/4] row 'b' seed 0: val 0.5069 (4m12s, ETA 8m24s)"
    u.done("row 'c' seed 0", "val 0.4", seconds=3 * 3600 + 120)
    assert said[-1].endswith("(3h02m, ETA 1h33m)") and duration(9) == "9s"
    u.done("row 'd' seed 0", "val 0.4", seconds=1)
    assert said[-1].endswith("(1s)")  # the last: nothing left


def test_ablate_and_ensemble_print_one_line_per_run_and_one_table(tmp_path, tiny_root, capsys):
    cache = tmp_path / "cache"
    args = ["--table", "004-demo-authors", "--preset", "tiny", "--data-root", str(tiny_root), "--out", str(tmp_path / "ab"),
            "--runs", str(cache)]
    assert ablate_main(args) == EXIT_OK
    out = capsys.readouterr().out
    lines = _lines(out)
    assert len(lines) == 2 and all(LINE.match(line) for line in lines), lines
    assert lines[0].startswith("[1/2] 004-demo-authors row 'demo (configs/demo.yaml)' seed 0: val ") and ", ETA " in lines[0]
    assert "Adoration" not in out and out.count("| row ") == 1  # no per-run tables; the table once

    # an ensemble over seeds 0 and 1 of the first row: seed 0 is in the cache, seed 1 is trained
    overrides = [f"data.root={tiny_root}", "data.synthetic=tiny", "data.batch_size=8", "model.preset=tiny",
                 "trainer.max_epochs=1"]
    (tmp_path / "e.yaml").write_text(f"members:\n  - {{name: demo, config: configs/demo.yaml, overrides: {overrides}, "
                                     f"seeds: [0, 1]}}\nruns: {cache}\ncross_fit: 2\n")
    assert ensemble_main(["--config", str(tmp_path / "e.yaml"), "--out", str(tmp_path / "ens")]) == EXIT_OK
    out = capsys.readouterr().out
    lines = _lines(out)
    assert lines[0] == f"[1/2] member 'demo' seed 0: val {_val(out, 0)} (cached)" and LINE.match(lines[1]), lines
    assert "Adoration" not in out and "mean_of_members" not in out and "{" not in out
    assert out.count("mean of the members") == 1 and "ensemble (mean)" in out and "member demo/seed1" in out

    # the README's form: the override after --runs is an override, not a run directory
    runs = [str(p.parent) for p in sorted(cache.glob("*/metrics.json"))][:2]
    assert ensemble_main(["--runs", *runs, "combiner=weights", "--out", str(tmp_path / "ab2")]) == EXIT_OK
    assert "ensemble (weights)" in capsys.readouterr().out

    # evaluate prints train.py's table: intervals and the synthetic ceiling
    assert evaluate_main(["--run", runs[0]]) == EXIT_OK
    out = capsys.readouterr().out
    assert "mean PCC 95% CI (bootstrap over videos): val " in out and "ceiling " in out and "% of ceiling" in out


def _val(out: str, seed: int) -> str:
    return re.search(rf"seed {seed}: val (\S+)", out).group(1)


def test_runs_split_from_overrides(tmp_path):
    (tmp_path / "a=b").mkdir()
    assert split_runs(["r1", "combiner=weights", str(tmp_path / "a=b")], ["x=1"]) == (
        ["r1", str(tmp_path / "a=b")], ["combiner=weights", "x=1"])


def test_search_prints_one_line_per_trial_and_one_table(tmp_path, tiny_root, capsys):
    args = ["--config", "configs/search/tiny.yaml", "--out", str(tmp_path / "s"), "--n-trials", "2",
            f"base_overrides.0=data.root={tiny_root}"]
    assert search_main(args) == EXIT_OK
    out = capsys.readouterr().out
    lines = _lines(out)
    assert [line[:5] for line in lines] == ["[1/2]", "[2/2]"] and all(LINE.match(line) for line in lines), lines
    assert lines[0].startswith("[1/2] trial 0 (the paper setting): complete val ") and ", ETA " in lines[0]
    assert "Adoration" not in out and '"worker"' not in out  # no per-run tables, no JSON dump
    assert "best (val)" in out and "best, retrained" in out and "paper setting (val)" in out


# ----------------------------------------------------------------------------- Lightning's noise
def test_a_tiny_training_prints_no_lightning_advertising(tmp_path, tiny_root):
    cmd = [sys.executable, "tools/train.py", "--config", "configs/demo.yaml", f"data.root={tiny_root}",
           "data.synthetic=tiny", f"out={tmp_path / 'run'}", "model.preset=tiny", "trainer.max_epochs=1"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    text = p.stdout + p.stderr
    assert not [n for n in NOISE if n in text], [line for line in text.splitlines() if any(n in line for n in NOISE)]
    assert "deprecated" not in p.stderr.lower()
    assert "meaningless at that size" in p.stderr  # eri's own warnings still show
    assert "mean PCC" in p.stdout  # and a single run still prints its table


# ----------------------------------------------------------------------------- predict debris
def test_a_failed_predict_leaves_nothing_for_the_next_call(tmp_path):
    from eri.data.store import FeatureStore
    from eri.inference.predictor import Predictor
    from eri.models.spec import ModelSpec

    good = tone_video(tmp_path / "v" / "good.mp4")
    (tmp_path / "v" / "bad.mp4").write_bytes(b"not a video at all" * 100)
    (tmp_path / "a.yaml").write_text("extractors:\n  - {name: audio}\n")
    Extraction(load_extract_config(tmp_path / "a.yaml"), tmp_path / "v", progress=False).run()
    meta = FeatureStore(tmp_path / "v").meta("audio")
    spec = ModelSpec(branches=[{"name": "a", "streams": ["audio"], "encoder": {"name": "mean_pool", "hidden": 4}}],
                     fusion={"name": "concat"}, stream_dims={"audio": int(meta["dim"])}, stats=None,
                     policy={"drop_invalid_frames": True, "min_valid_frames": 1, "frame_stride": 1},
                     train_mean=[0.5] * 7, streams={"audio": meta})
    model = Predictor(spec.build(), spec, "model.ckpt")
    out = tmp_path / "pred"
    first = model.predict([tmp_path / "v" / "bad.mp4"], out, progress=False)
    assert first["note"].str.startswith("extraction failed").all()
    second = model.predict([good], out, progress=False)
    assert list(second["File_ID"]) == ["good"] and np.isfinite(second["Adoration"]).all()
    assert sorted(p.name for p in (out / "store" / "videos").iterdir()) == ["good.mp4"]
    report = (out / "store" / "extraction_report.csv").read_text()
    assert "bad" not in report  # the second call extracted and reported its own video only
    assert not (out / "store" / "features" / "audio" / "bad.npz").exists()
