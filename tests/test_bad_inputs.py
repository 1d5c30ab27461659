"""Files from strangers and damaged files, through the tools a user runs (in-process, as `main(argv)`).

For each class of bad input: the tool returns its documented exit code instead of raising (no
traceback reaches the user), the one `error:` line names the file or key and the problem, a
malicious pickle never runs (its marker file is never created), nothing outside the store changes,
and nothing already stored is lost."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_random_dataset

from eri.constants import EMOTIONS
from eri.data.store import FeatureStore
from eri.errors import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, InputError, StoreError, UnsafeFileError
from eri.features.video import write_video
from eri.io import atomic_write_text, inside, mask_secrets, name_problem
from tools.evaluate import main as evaluate_main
from tools.extract import main as extract_main
from tools.predict import main as predict_main
from tools.search import main as search_main
from tools.train import main as train_main

SMALL = """seed: 0
data: {{root: {root}, batch_size: 8, min_valid_frames: 5}}
model:
  branches: [{{name: mma, streams: [mma], encoder: {{name: mean_pool, hidden: 8}}}}]
  fusion: {{name: concat}}
optim: {{lr: 1.0e-3, weight_decay: 0.0}}
trainer: {{max_epochs: 1, progress_bar: false}}
"""


# ----------------------------------------------------------------------------- helpers
class _Evil:
    """Pickles to ``open(marker, "w")``: unpickling it without weights_only creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "payload": _Evil(marker)}, path)
    return path


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def dataset(tmp_path: Path, name: str = "ds") -> Path:
    return make_random_dataset(tmp_path / name, short=("00002",))


def config(tmp_path: Path, root: Path, text: str = SMALL) -> Path:
    p = tmp_path / "small.yaml"
    p.write_text(text.format(root=root))
    return p


def train(tmp_path, root, *extra, out="run") -> int:
    return train_main(["--config", str(config(tmp_path, root)), "--out", str(tmp_path / out), *extra])


def tone_video(path: Path, frames: int = 6, audio: bool = True) -> Path:
    fr = np.full((frames, 32, 48, 3), 90, np.uint8)
    t = np.arange(int(frames / 5 * 16000)) / 16000
    write_video(path, fr, fps=5, audio=(0.3 * np.sin(2 * np.pi * 440 * t))[None] if audio else None)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run on random features (tests copy it before tampering)."""
    tmp = tmp_path_factory.mktemp("trained")
    root = dataset(tmp)
    assert train(tmp, root) == EXIT_OK
    return tmp / "run", root


# ----------------------------------------------------------------------------- 1. code execution
def test_the_malicious_pickle_is_armed(tmp_path):
    """The fixture really would run code: loading it the unsafe way creates the marker."""
    marker = tmp_path / "pwned"
    torch.load(evil_checkpoint(tmp_path / "evil.ckpt", marker), weights_only=False)
    assert marker.exists()


def test_evaluate_predict_and_resume_refuse_a_pickled_checkpoint(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    marker = tmp_path / "pwned"
    best = run / json.loads((run / "metrics.json").read_text())["checkpoint"]
    evil_checkpoint(best, marker)
    assert evaluate_main(["--run", str(run)]) == EXIT_INPUT
    line = error_line(capsys)
    assert str(best) in line and "pickled Python objects (it needs" in line

    assert predict_main(["--checkpoint", str(best), "--video", str(tone_video(tmp_path / "a.mp4")),
                         "--out", str(tmp_path / "pred")]) == EXIT_INPUT
    assert str(best) in error_line(capsys)

    evil_checkpoint(run / "checkpoints" / "last.ckpt", marker)  # a resume loads last.ckpt
    cfg = tmp_path / "resume.yaml"
    cfg.write_text((run / "config.yaml").read_text())
    assert train_main(["--config", str(cfg), "--out", str(run), "trainer.max_epochs=2"]) == EXIT_INPUT
    assert "last.ckpt" in error_line(capsys)
    assert not marker.exists()


def test_weights_files_of_extractors_and_mma_backbones_are_refused(tmp_path, capsys):
    from eri.mma.model import create_mma

    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "weights.pth", marker)
    root = tmp_path / "videos"
    tone_video(root / "a.mp4")
    for name in ("holistic", "mma"):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"extractors:\n  - {{name: {name}, config: {{weights: {evil}}}}}\n")
        assert extract_main(["--config", str(cfg), "--data-root", str(root), "--no-progress"]) == EXIT_INPUT
        line = error_line(capsys)
        assert str(evil) in line and "refused" in line
    with pytest.raises(UnsafeFileError, match="weights.pth refused"):
        create_mma({"backbone": {"name": "resnet18", "pretrained": str(evil)}})
    assert not marker.exists() and not (root / "features").exists()


# ----------------------------------------------------------------------------- 2. ids and paths
TRAVERSAL = ("../../../outside/x", "..\\..\\x", "/tmp/x", "a\x01b", "", "..")


def test_names_that_could_leave_the_store_are_refused(tmp_path):
    for bad in TRAVERSAL:
        assert name_problem(bad), bad
        with pytest.raises(StoreError):
            FeatureStore(tmp_path).path("audio", bad)
    assert name_problem("00001") is None and name_problem("video 1") is None
    with pytest.raises(InputError, match="outside"):
        inside(tmp_path, "..", "x")


def test_traversal_ids_in_a_label_file(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    np.savez(outside / "x.npz", features=np.zeros((2, 2)))  # the file a traversal id would reach
    before = snapshot(outside)
    root = tmp_path / "ds"
    rows = [{"File_ID": i, "Split": "Train", **{e: 0.5 for e in EMOTIONS}} for i in ("[00001]", "[00002]", *TRAVERSAL[:3])]
    root.mkdir()
    pd.DataFrame(rows).to_csv(root / "data_info.csv", index=False)
    tone_video(root / "00001.mp4")
    tone_video(root / "00002.mp4")
    cfg = tmp_path / "audio.yaml"
    cfg.write_text("extractors:\n  - {name: audio}\n")
    # extraction warns about the label file, extracts the good ids, reports the bad ones
    assert extract_main(["--config", str(cfg), "--data-root", str(root), "--no-progress"]) == EXIT_PARTIAL
    report = pd.read_csv(root / "extraction_report.csv")
    assert report["error"].str.contains("left out").sum() == 3 and report["failed"].all()
    assert sorted(FeatureStore(root).index("audio")["File_ID"]) == ["00001", "00002"]
    # training refuses the label file, naming it and the id
    assert train(tmp_path, root) == EXIT_INPUT
    line = error_line(capsys)
    assert "data_info.csv" in line and "bad id" in line
    assert snapshot(outside) == before and sorted(p.name for p in tmp_path.iterdir()) == ["audio.yaml", "ds", "outside", "small.yaml"]


def test_a_run_directory_cannot_point_outside_itself(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    torch.save({"state_dict": {}}, tmp_path / "elsewhere.ckpt")
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "checkpoint": "../elsewhere.ckpt"}))
    assert evaluate_main(["--run", str(run)]) == EXIT_INPUT
    assert "lies outside" in error_line(capsys)


# ----------------------------------------------------------------------------- 3. damaged store files
def _damage(path: Path, how: str) -> None:
    if how == "zero bytes":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif how == "not a zip":
        path.write_text("hello")
    else:
        with np.load(path) as z:
            arrays = dict(z)
        t = len(arrays["features"])
        if how == "wrong width":
            arrays["features"] = arrays["features"][:, :-1]
        elif how == "valid of the wrong length":
            arrays["valid"] = arrays["valid"][: t - 3]
        with zipfile.ZipFile(path, "w") as zf:
            for k, v in arrays.items():
                with zf.open(f"{k}.npy", "w") as f:
                    np.lib.format.write_array(f, v)


DAMAGE = {
    "zero bytes": "damaged",
    "truncated": "damaged",
    "not a zip": "damaged",
    "wrong width": "width 25, but the stream's meta.json says dim 26",
    "valid of the wrong length": "valid has shape",
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_training_names_a_damaged_feature_file_before_the_first_epoch(tmp_path, capsys, how):
    root = dataset(tmp_path)
    bad = root / "features" / "mma" / "00015.npz"  # a val video: found while loading, not in epoch-0 validation
    _damage(bad, how)
    before = snapshot(root)
    assert train(tmp_path, root) == EXIT_INPUT
    line = error_line(capsys)
    assert str(bad) in line and DAMAGE[how] in line and "bad_files=skip" in line
    assert not (tmp_path / "run" / "checkpoints").exists() and snapshot(root) == before


def test_bad_files_skip_trains_without_the_video_and_reports_it(tmp_path):
    root = dataset(tmp_path)
    _damage(root / "features" / "mma" / "00003.npz", "truncated")
    with pytest.warns(UserWarning, match="left out because of damaged feature files"):
        assert train(tmp_path, root, "data.bad_files=skip") == EXIT_PARTIAL
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [s["File_ID"] for s in metrics["skipped"]] == ["00003"] and "mean_pcc" in metrics["val"]
    assert "00003.npz is damaged" in (tmp_path / "run" / "skipped_videos.csv").read_text()


def test_damaged_meta_and_index_are_named(tmp_path, capsys):
    root = dataset(tmp_path)
    (root / "features" / "mma" / "index.csv").write_bytes(b"\x00\xff\x00garbage")
    assert train(tmp_path, root) == EXIT_INPUT
    assert "index.csv" in error_line(capsys)
    (root / "features" / "mma" / "meta.json").write_text("{not json")
    assert train(tmp_path, root) == EXIT_INPUT
    line = error_line(capsys)
    assert "meta.json is damaged" in line


def test_extraction_recomputes_damaged_outputs_and_index_only_reports_them(tmp_path, capsys):
    root = tmp_path / "videos"
    for i in range(3):
        tone_video(root / f"v{i}.mp4")
    cfg = tmp_path / "audio.yaml"
    cfg.write_text("extractors:\n  - {name: audio}\n")
    args = ["--config", str(cfg), "--data-root", str(root), "--no-progress"]
    assert extract_main(args) == EXIT_OK
    good = {p.name: p.read_bytes() for p in (root / "features" / "audio").glob("*.npz")}
    _damage(root / "features" / "audio" / "v1.npz", "truncated")
    assert extract_main([*args, "--index-only"]) == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert "Traceback" not in err and "v1.npz is damaged" in err
    assert sorted(FeatureStore(root).index("audio")["File_ID"]) == ["v0", "v2"]  # never read by training
    assert extract_main(args) == EXIT_OK  # the damaged output is stale: recomputed, the others kept
    assert {p.name: p.read_bytes() for p in (root / "features" / "audio").glob("*.npz")} == good
    assert sorted(FeatureStore(root).index("audio")["File_ID"]) == ["v0", "v1", "v2"]


# ----------------------------------------------------------------------------- 4. splits
def _edit_labels(root: Path, fn) -> None:
    df = pd.read_csv(root / "data_info.csv", dtype={"File_ID": str})
    fn(df)
    df.to_csv(root / "data_info.csv", index=False)


@pytest.mark.parametrize("case", ["unlabeled row", "one video"])
def test_a_val_split_that_cannot_be_scored_stops_before_training(tmp_path, capsys, case):
    root = dataset(tmp_path)

    def edit(df):
        val = df.index[df["Split"] == "Val"]
        if case == "unlabeled row":
            df.loc[val[0], list(EMOTIONS)] = np.nan
        else:
            df.loc[val[1:], "Split"] = "Test"

    _edit_labels(root, edit)
    assert train(tmp_path, root) == EXIT_INPUT
    line = error_line(capsys)
    assert "val split cannot be scored" in line and ("1 of 6 videos have no labels" in line or "1 video(s)" in line)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_partly_unlabeled_test_split_is_reported_not_dropped(tmp_path):
    root = dataset(tmp_path)

    def unlabel(df):
        df.loc[df["File_ID"] == "[00020]", list(EMOTIONS)] = np.nan

    _edit_labels(root, unlabel)
    with pytest.warns(UserWarning, match="test not scored: 1 of 6 videos have no labels"):
        assert train(tmp_path, root) == EXIT_OK
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"] == {"not_scored": "1 of 6 videos have no labels"} and "mean_pcc" in metrics["val"]
    assert len(pd.read_csv(tmp_path / "run" / "predictions_test.csv")) == 6


# ----------------------------------------------------------------------------- 5. extraction reports
def test_partial_decode_is_reported_with_frame_counts(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (72, 64, 64, 3), dtype=np.uint8)
    write_video(root / "cut.mkv", frames, fps=24)
    data = (root / "cut.mkv").read_bytes()
    (root / "cut.mkv").write_bytes(data[: len(data) * 3 // 10])
    cfg = tmp_path / "face.yaml"
    cfg.write_text("faces: {crop_size: 64}\nextractors:\n  - {name: holistic, config: {random_init: true}}\n")
    assert extract_main(["--config", str(cfg), "--data-root", str(root), "--no-progress"]) == EXIT_OK
    report = pd.read_csv(root / "extraction_report.csv")
    note = report[report["stage"] == "decode"]["error"].item()
    assert "partially decoded: 21 frames of the 72 the container promises" in note


def test_the_report_keeps_earlier_notes_and_label_problems_only_warn(tmp_path, capsys):
    root = tmp_path / "ds"
    root.mkdir()
    rows = [{"File_ID": f"[0000{i}]", "Split": "Train", **{e: 0.5 for e in EMOTIONS}} for i in (1, 2, 3)]
    rows[0]["Fear"] = 1.5  # a label problem: training refuses it, extraction only warns
    pd.DataFrame(rows).to_csv(root / "data_info.csv", index=False)
    tone_video(root / "00001.mp4", audio=False)
    tone_video(root / "00002.mp4")
    cfg = tmp_path / "audio.yaml"
    cfg.write_text("extractors:\n  - {name: audio}\n")
    args = ["--config", str(cfg), "--data-root", str(root), "--no-progress"]
    assert extract_main(args) == EXIT_PARTIAL  # 00003 has no video file
    out = capsys.readouterr().out
    assert "warning:" in out and "outside [0, 1]" in out
    tone_video(root / "00003.mp4")
    assert extract_main(args) == EXIT_OK
    report = pd.read_csv(root / "extraction_report.csv")
    assert report["error"].str.contains("no audio track").sum() == 1  # the first run's note survives
    assert not report["failed"].any()  # 00003's failure was redone and replaced


def test_two_files_for_one_id_skip_that_id_and_go_on(tmp_path):
    root = tmp_path / "videos"
    tone_video(root / "a" / "x.mp4")
    tone_video(root / "b" / "x.mkv")
    tone_video(root / "y.mp4")
    cfg = tmp_path / "audio.yaml"
    cfg.write_text("extractors:\n  - {name: audio}\n")
    assert extract_main(["--config", str(cfg), "--data-root", str(root), "--no-progress"]) == EXIT_PARTIAL
    report = pd.read_csv(root / "extraction_report.csv")
    assert report["error"].str.contains("2 video files for id x").any()
    assert FeatureStore(root).index("audio")["File_ID"].tolist() == ["y"]


# ----------------------------------------------------------------------------- 6. errors and exit codes
def _text_label(df):
    df["Fear"] = df["Fear"].astype(object)
    df.loc[3, "Fear"] = "high"


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda root, p: p.write_text(SMALL.format(root=root) + "data: [\n"), "not valid YAML"),
        (lambda root, p: (root / "data_info.csv").write_text(""), "data_info.csv is empty"),
        (lambda root, p: (root / "data_info.csv").write_text("File_ID,Split," + ",".join(EMOTIONS) + "\n"),
         "data_info.csv has a header but no rows"),
        (lambda root, p: _edit_labels(root, _text_label), "non-numeric value 'high' in column Fear for File_ID 00004"),
        (lambda root, p: shutil.rmtree(root), "data.root"),
        (lambda root, p: p.write_text(SMALL.format(root=root) + "out: ${oc.env:HOME}\n"), "resolvers like ${oc.env"),
    ],
    ids=["yaml syntax", "empty labels", "header only", "text label", "missing root", "env resolver"],
)
def test_input_errors_are_one_line(tmp_path, capsys, make, expect):
    root = dataset(tmp_path)
    cfg = config(tmp_path, root)
    make(root, cfg)
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == EXIT_INPUT
    assert expect in error_line(capsys)


@pytest.mark.parametrize(
    "override, expect",
    [
        ("trainer.max_epochs=-1", "trainer.max_epochs = -1 must be >= 1"),
        ("data.layout=abaw6", "must be one of"),
        ("model.branches.0.encoder.hiddn=4", "valid keys: ['name', 'hidden', 'dropout']"),
        ("model.branches.0.encoder={name: gru_transformer, hidden: 6, heads: 4}", "divisible"),
        ("optim.name=adamax", "must be one of"),
    ],
)
def test_nonsense_values_are_refused_up_front(tmp_path, capsys, override, expect):
    root = dataset(tmp_path)
    assert train(tmp_path, root, override) == EXIT_INPUT
    assert expect in error_line(capsys)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_extraction_config_ranges_and_missing_root(tmp_path, capsys):
    cfg = tmp_path / "audio.yaml"
    cfg.write_text("extractors:\n  - {name: audio}\n")
    root = tmp_path / "videos"
    tone_video(root / "a.mp4")
    assert extract_main(["--config", str(cfg), "--data-root", str(root), "faces.every_k=0"]) == EXIT_INPUT
    assert "faces.every_k = 0 must be >= 1" in error_line(capsys)
    assert extract_main(["--config", str(cfg), "--data-root", str(tmp_path / "nowhere")]) == EXIT_INPUT
    assert "nowhere does not exist" in error_line(capsys)


def test_an_unreachable_database_is_one_line_and_its_password_is_masked(tmp_path, capsys):
    url = "postgresql+psycopg2://eri:s3cret@127.0.0.1:1/none"
    code = search_main(["--config", "configs/search/tiny.yaml", "--storage", url, "--out", str(tmp_path)])
    assert code == EXIT_INPUT
    line = error_line(capsys)
    assert "cannot open the study storage postgresql+psycopg2://eri:***@127.0.0.1:1/none" in line
    assert "s3cret" not in line
    assert mask_secrets("x sqlite:///a.db y postgresql://u:p%40ss@h/db?password=zz") == (
        "x sqlite:///a.db y postgresql://u:***@h/db?password=***"
    )


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        FeatureStore(tmp_path).write("s", "v", np.zeros((2, 3), np.float32), np.ones(2, bool), np.zeros(2))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "features" / "s" / "v.npz").stat().st_mode & 0o777 == 0o640
