"""Files from strangers and damaged files, through the tools a user runs (in-process, as `main(argv)`).

For each class of bad input: the tool returns its documented exit code instead of raising (no
traceback reaches the user), the one `error:` line names the file or key and the problem, a
malicious pickle never runs (its marker file is never created), nothing outside the store changes,
and nothing already stored is lost."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_random_dataset

from eri.constants import EMOTIONS
from eri.data.datamodule import ERIDataModule
from eri.data.packed import ARRAYS, PackedStream, _digest, ensure_packed, packed_dir
from eri.data.store import FeatureStore
from eri.errors import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, CheckpointError, InputError, StoreError, UnsafeFileError
from eri.features.video import MAX_SIDE, decode, write_video
from eri.io import atomic_write_text, inside, load_torch, mask_secrets, name_problem
from eri.training.metrics import bootstrap_ci, format_table, score
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
    from eri.models.mma import create_mma

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


def audio_store(tmp_path: Path, n: int, extractor: str = "{name: audio}") -> tuple[Path, list[str]]:
    """A folder of ``n`` tone videos with an audio-only store extracted; the extract arguments."""
    root = tmp_path / "videos"
    for i in range(n):
        tone_video(root / f"v{i}.mp4")
    cfg = tmp_path / "audio.yaml"
    cfg.write_text(f"extractors:\n  - {extractor}\n")
    args = ["--config", str(cfg), "--data-root", str(root), "--no-progress"]
    assert extract_main(args) == EXIT_OK
    return root, args


def test_extraction_recomputes_damaged_outputs_and_index_only_reports_them(tmp_path, capsys):
    root, args = audio_store(tmp_path, 3)
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
        # silently accepted until issue 19
        ("loss={l2: -1.0}", "loss.l2 = -1.0: a loss weight must be a finite number >= 0"),
        ("loss={l2: 0.0, pcc: 0.0}", "every weight is 0"),
        ("trainer.devices=0", "trainer.devices = 0 must be a count >= 1"),
        ("trainer.devices=[]", "trainer.devices = [] must list distinct device indices"),
    ],
)
def test_nonsense_values_are_refused_up_front(tmp_path, capsys, override, expect):
    root = dataset(tmp_path)
    assert train(tmp_path, root, override) == EXIT_INPUT
    assert expect in error_line(capsys)
    assert not (tmp_path / "run").exists()


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

# ================================================================================================
# data and training side (issue 19): packed copies, NaN scores, unscorable val, loss weights, rates, slices
# ================================================================================================
# ----------------------------------------------------------------------------- the packed copy
def _damage_pack(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "truncated":
        os.truncate(path, size // 2)
    elif how == "emptied":
        path.write_bytes(b"")
    else:  # random bytes, same size
        path.write_bytes(np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes())


@pytest.fixture(scope="module")
def memmap_run(tmp_path_factory):
    """A dataset with its packed copy, and the numbers a memmap run gets from it."""
    tmp = tmp_path_factory.mktemp("memmap")
    root = dataset(tmp)
    assert train(tmp, root, "data.cache=memmap") == EXIT_OK
    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    return root, metrics


@pytest.mark.parametrize("how", ["truncated", "emptied", "random bytes"])
def test_a_damaged_packed_copy_is_rebuilt_and_gives_the_same_numbers(memmap_run, tmp_path, capsys, how):
    root = tmp_path / "ds"
    shutil.copytree(memmap_run[0], root)
    pack = packed_dir(FeatureStore(root), "mma")
    _damage_pack(pack / "features.npy", how)
    with pytest.raises(StoreError, match="packed copy is damaged.*features.npy"):
        PackedStream(pack)  # opened without the check of prepare_data: refused, one line
    assert train(tmp_path, root, "data.cache=memmap") == EXIT_OK
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for split in ("val", "test"):
        assert metrics[split]["mean_pcc"] == memmap_run[1][split]["mean_pcc"]
        assert np.isfinite(metrics[split]["ci95"]["mean_pcc"]).all()
    assert "0.0000 to 0.0000" not in out and "nan" not in out.lower()


def test_a_store_file_changed_in_place_with_its_mtime_restored_repacks(tmp_path):
    root = make_random_dataset(tmp_path / "ds")
    fs = FeatureStore(root)
    ensure_packed(fs, "mma", progress=False)
    vid = fs.index("mma")["File_ID"].iloc[2]
    path = fs.path("mma", vid)
    st = path.stat()
    f, v, t = fs.load("mma", vid, with_times=True)
    fs.write("mma", vid, (f * 0 + 0.75).astype(np.float16), v, t)  # same shapes and dtype: same size
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    ensure_packed(fs, "mma", progress=False)
    np.testing.assert_array_equal(PackedStream(packed_dir(fs, "mma")).load(vid)[0], f * 0 + 0.75)


def test_a_copied_store_is_hashed_not_repacked(tmp_path):
    root = make_random_dataset(tmp_path / "ds")
    ensure_packed(FeatureStore(root), "mma", progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # every stat changes, no content does
    pack = packed_dir(FeatureStore(copy), "mma")
    before = (pack / "features.npy").stat().st_ino
    ensure_packed(FeatureStore(copy), "mma", progress=False)
    assert (pack / "features.npy").stat().st_ino == before  # the same arrays, their stats refreshed
    stats = json.loads((pack / "index.json").read_text())["stats"]
    vid = next(iter(stats))
    assert stats[vid][2] == FeatureStore(copy).path("mma", vid).stat().st_ctime_ns


def test_damage_between_the_sampled_blocks_is_caught_when_read(tmp_path):
    """A pack is hashed in full only up to 64 MiB; damage the hash misses still cannot reach a model."""
    root = make_random_dataset(tmp_path / "ds")
    fs = FeatureStore(root)
    pack = ensure_packed(fs, "mma", progress=False)
    info = json.loads((pack / "index.json").read_text())
    feats = np.load(pack / "features.npy", mmap_mode="r+")
    feats[info["offsets"][1] : info["offsets"][2]] = np.nan  # the second video's rows
    feats.flush()
    del feats
    info["arrays"] = {name: _digest(pack / f"{name}.npy") for name in ARRAYS}  # as if the hash had not seen it
    (pack / "index.json").write_text(json.dumps(info))
    stream = PackedStream(pack)
    stream.load(info["ids"][0])
    with pytest.raises(StoreError, match=f"features.npy: the packed copy is damaged .*video {info['ids'][1]}"):
        stream.load(info["ids"][1])


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_packed_folders_and_files_follow_the_umask(tmp_path, umask):
    root = make_random_dataset(tmp_path / "ds")
    old = os.umask(umask)
    try:
        pack = ensure_packed(FeatureStore(root), "mma", progress=False)
    finally:
        os.umask(old)
    assert pack.stat().st_mode & 0o777 == 0o777 & ~umask
    for p in pack.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def _as_nobody(root: Path) -> str:
    """What another user (nobody) gets from the packed copy: ``read <width>`` or the one error line.
    Switches the effective ids only, so they are switched back after."""
    fs = FeatureStore(root)
    os.setegid(65534), os.seteuid(65534)
    try:
        pack = ensure_packed(fs, "mma", progress=False)
        return f"read {PackedStream(pack).load(fs.index('mma')['File_ID'][0])[0].shape[1]}"
    except StoreError as e:
        return f"error: {e}"
    finally:
        os.seteuid(0), os.setegid(0)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="switches to another user: needs root")
def test_another_user_reads_a_current_pack_and_gets_one_line_for_a_stale_one():
    base = Path(tempfile.mkdtemp(prefix="eri-shared-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        old = os.umask(0o022)
        try:
            root = make_random_dataset(base / "ds")
            fs = FeatureStore(root)
            ensure_packed(fs, "mma", progress=False)
        finally:
            os.umask(old)
        assert _as_nobody(root) == "read 26"
        vid = fs.index("mma")["File_ID"].iloc[0]
        f, v, t = fs.load("mma", vid, with_times=True)
        fs.write("mma", vid, (f + 1).astype(np.float16), v, t)  # stale now: it needs a rebuild
        line = _as_nobody(root)
        assert line.startswith("error: ") and "packed copy of stream 'mma'" in line and "not writable by you" in line
    finally:
        shutil.rmtree(base)


# ----------------------------------------------------------------------------- NaN is not a score
def test_nan_predictions_are_not_scored_and_the_run_fails(tmp_path, capsys):
    root = dataset(tmp_path)
    with pytest.warns(UserWarning, match="val not scored: 6 of 6 videos have NaN or infinite predictions"):
        assert train(tmp_path, root, "optim.name=sgd", "optim.lr=1.0e30") == EXIT_PARTIAL  # diverges
    out = capsys.readouterr().out
    assert "0.0000 to 0.0000" not in out and "mean PCC" not in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for split in ("val", "test"):
        assert metrics[split]["failed"] and "NaN" in metrics[split]["not_scored"] and "mean_pcc" not in metrics[split]


def test_the_metric_helpers_never_turn_nan_into_a_result():
    target = np.random.default_rng(0).uniform(size=(30, 7))
    pred = target.copy()
    pred[3, 2] = np.nan
    with pytest.raises(ValueError, match="1 of 30 videos have NaN"):
        bootstrap_ci(pred, target)
    good = {**score(target, target), "ci95": bootstrap_ci(target, target)}
    table = format_table({"val": good, "test": score(pred, target)})
    assert "test" not in table and "nan" not in table.lower() and "val" in table


# ----------------------------------------------------------------------------- val labels
def _val_labels(root: Path, columns: list[str], value: float) -> None:
    df = pd.read_csv(root / "data_info.csv")
    df.loc[df["Split"] == "Val", columns] = value
    df.to_csv(root / "data_info.csv", index=False)


def test_all_constant_val_labels_stop_before_training(tmp_path, capsys):
    root = dataset(tmp_path)
    _val_labels(root, list(EMOTIONS), 0.5)
    assert train(tmp_path, root) == EXIT_INPUT
    line = error_line(capsys)
    assert "every val label column is constant" in line and "choose the best epoch" in line
    assert not (tmp_path / "run").exists()


def test_some_constant_val_labels_warn_naming_them(tmp_path):
    root = dataset(tmp_path)
    _val_labels(root, [EMOTIONS[1]], 0.25)
    dm = ERIDataModule(root, ["mma"], progress=False, min_valid_frames=5)
    with pytest.warns(UserWarning, match=rf"val labels are constant for \['{EMOTIONS[1]}'\]"):
        dm.setup("fit")


# ----------------------------------------------------------------------------- silently accepted until now
def _meta(root: Path, stream: str, **changes) -> Path:
    path = root / "features" / stream / "meta.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


@pytest.mark.parametrize("stream, rate, expect", [
    ("audio", "frame", "rate is 'frame', but its timestamps are 0.5 s apart (2 steps/s)"),
    ("mma", 2.0, "rate is 2 steps/s, but its timestamps are 0.04 s apart (25 steps/s)"),
])
def test_a_rate_that_disagrees_with_the_timestamps_is_refused(tmp_path, capsys, stream, rate, expect):
    root = dataset(tmp_path)
    meta = _meta(root, stream, rate=rate)
    cfg = config(tmp_path, root, SMALL.replace("streams: [mma]", f"streams: [{stream}]"))
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == EXIT_INPUT
    line = error_line(capsys)
    assert line.startswith(f"error: {meta}: {expect}") and f"features/{stream}/" in line and ".npz" in line


def test_a_stream_slice_past_the_width_names_the_spec_and_the_width(tmp_path, capsys):
    root = dataset(tmp_path)
    cfg = config(tmp_path, root, SMALL.replace("streams: [mma]", "streams: ['au[0:99]']"))
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == EXIT_INPUT
    line = error_line(capsys)
    assert "'au[0:99]'" in line and "34 columns" in line


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    root = dataset(tmp_path)
    (tmp_path / "taken").write_text("mine")
    assert train(tmp_path, root, out="taken") == EXIT_INPUT
    assert "is a file, not a run directory" in error_line(capsys)
    assert (tmp_path / "taken").read_text() == "mine"

# ================================================================================================
# extraction, IO and model files (issue 19): remote code, pickles, linear masking, database URLs, decompression bombs, model specs, predict, --index-only
# ================================================================================================
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def remote_code_folder(folder: Path, marker: Path) -> Path:
    """A model folder whose config.json maps AutoModel to its own module, which creates ``marker`` on import."""
    folder.mkdir(parents=True)
    auto = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil_w2v", "auto_map": auto}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000, "do_normalize": True}))
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil_w2v'\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n"
    )
    return folder


def audio_ssl_config(tmp_path: Path, model_dir: Path) -> Path:
    cfg = tmp_path / "ssl.yaml"
    cfg.write_text(f"extractors:\n  - {{name: audio_ssl, config: {{model_dir: {model_dir}, normalize: true}}}}\n")
    return cfg


def bomb(path: Path, side: int = 8000, frames: int = 2) -> Path:
    """A video declaring ``side`` x ``side`` black frames, small on disk (PNG in .mov, grey: cheap to write)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("png", rate=Fraction(5))
        s.width, s.height, s.pix_fmt = side, side, "gray"
        f = av.VideoFrame.from_ndarray(np.zeros((side, side), np.uint8), format="gray")
        for i in range(frames):
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def tamper_model(src: Path, dst: Path, **spec) -> Path:
    """A copy of a model file with fields of its stored spec replaced."""
    blob = torch.load(src, weights_only=True)
    blob["eri_model"].update(spec)
    torch.save(blob, dst)
    return dst


def model_file(trained) -> Path:
    run = trained[0]
    if (run / "model.ckpt").is_file():
        return run / "model.ckpt"
    return run / json.loads((run / "metrics.json").read_text())["checkpoint"]


# ----------------------------------------------------------------------------- code in model folders
def extract_audio_ssl(tmp_path: Path, folder: Path, capsys) -> tuple[Path, str]:
    """Extraction of one tone video with the audio_ssl model ``folder``: must refuse; (videos root, error line)."""
    root = tmp_path / "videos"
    tone_video(root / "a.mp4")
    assert extract_main(["--config", str(audio_ssl_config(tmp_path, folder)), "--data-root", str(root),
                         "--no-progress"]) == EXIT_INPUT
    return root, error_line(capsys)


def test_a_model_folder_with_custom_code_is_refused_without_a_prompt(trained, tmp_path, capsys, monkeypatch):
    from transformers import AutoModel

    marker = tmp_path / "pwned"
    armed = remote_code_folder(tmp_path / "armed", marker)  # the fixture really would run code when trusted
    with pytest.raises(OSError):
        AutoModel.from_pretrained(armed, local_files_only=True, trust_remote_code=True)
    assert marker.exists()
    marker.unlink()

    folder = remote_code_folder(tmp_path / "ssl", marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # a prompt would read this "yes"
    root, line = extract_audio_ssl(tmp_path, folder, capsys)
    assert str(folder / "config.json") in line and "refused as unsafe" in line and "custom code" in line

    # the same folder named by a model file's spec: predict refuses it before any video is read
    meta = {"extractor": "audio_ssl", "rate": 50.0, "dim": 26, "dtype": "float16",
            "config": {"model_dir": str(folder), "normalize": True}}
    model = tamper_model(model_file(trained), tmp_path / "model.ckpt", streams={"mma": meta})
    assert predict_main(["--checkpoint", str(model), "--video", str(root / "a.mp4"), "--out", str(tmp_path / "p"),
                         "--no-figures"]) == EXIT_INPUT
    assert "custom code" in error_line(capsys)
    assert not marker.exists() and sys.stdin.read() == "y\n"  # never prompted, never ran


def test_a_pickled_pytorch_model_bin_in_a_model_folder_is_refused(tmp_path, capsys):
    from transformers import Wav2Vec2Config

    folder = tmp_path / "w2v"
    Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                   conv_dim=(8,) * 7).save_pretrained(folder)
    marker = tmp_path / "pwned"
    evil_checkpoint(folder / "pytorch_model.bin", marker)
    root, line = extract_audio_ssl(tmp_path, folder, capsys)
    assert str(folder / "pytorch_model.bin") in line and "refused as unsafe" in line and "pickled" in line
    assert "safetensors" in line and not marker.exists()


def test_load_torch_tells_an_unsafe_pickle_from_a_damaged_file(tmp_path):
    marker = tmp_path / "pwned"
    unsafe = {
        "torch.save of an object": lambda p: evil_checkpoint(p, marker),
        "raw pickle of an object": lambda p: p.write_bytes(pickle.dumps({"x": _Evil(marker)})),
        "raw pickle, protocol 0": lambda p: p.write_bytes(pickle.dumps({"x": _Evil(marker)}, protocol=0)),
        "raw pickle of plain values": lambda p: p.write_bytes(pickle.dumps({"x": 1})),
    }
    ok = tmp_path / "ok.pt"
    torch.save({"x": torch.zeros(4)}, ok)
    damaged = {
        "zero bytes": lambda p: p.write_bytes(b""),
        "text": lambda p: p.write_text("garbage"),
        "truncated": lambda p: p.write_bytes(ok.read_bytes()[: ok.stat().st_size // 2]),
    }
    for name, make in unsafe.items():
        make(p := tmp_path / f"{name}.pt")
        with pytest.raises(UnsafeFileError, match="refused as unsafe: it (holds pickled|is a Python pickle)"):
            load_torch(p)
    for name, make in damaged.items():
        make(p := tmp_path / f"{name}.pt")
        with pytest.raises(CheckpointError, match="is damaged or not a PyTorch file") as e:
            load_torch(p)
        assert not isinstance(e.value, UnsafeFileError), name
    assert not marker.exists() and load_torch(ok)["x"].shape == (4,)


# ----------------------------------------------------------------------------- untrusted text, databases
@pytest.mark.parametrize("text", ["a" * 5_000_000, "a://b:" * 800_000, "x://" * 1_000_000 + "@"],
                         ids=["letters", "schemes without @", "one @ at the end"])
def test_masking_is_linear_in_the_length_of_untrusted_text(text):
    t = time.perf_counter()
    mask_secrets(text)
    assert time.perf_counter() - t < 1.0  # the old pattern: 40 s for 60 KB of letters, 5 MB never finished


def test_masking_still_masks_passwords():
    assert mask_secrets("x sqlite:///a.db y postgresql://u:p%40ss@h/db?password=zz") == (
        "x sqlite:///a.db y postgresql://u:***@h/db?password=***"
    )
    assert mask_secrets("postgresql+psycopg2://eri:p@ss:w/rd@host:5432/db and more") == (
        "postgresql+psycopg2://eri:***@host:5432/db and more"
    )


def test_a_raw_at_in_a_database_password_and_an_unknown_driver_are_one_line(tmp_path, capsys):
    args = ["--config", "configs/search/tiny.yaml", "--out", str(tmp_path)]
    url = "postgresql+psycopg2://eri:s3@cret@127.0.0.1:1/none"
    assert search_main([*args, "--storage", url]) == EXIT_INPUT
    line = error_line(capsys)
    assert "postgresql+psycopg2://eri:***@127.0.0.1:1/none" in line and "cret" not in line
    assert "Connection refused" in line  # the driver got the right host, not "cret@127.0.0.1"
    for bad in ("foo://x/y", "postgresql+nodriver://u:pw12@h/db"):
        assert search_main([*args, "--storage", bad]) == EXIT_INPUT
        line = error_line(capsys)
        assert "not a database URL eri can use" in line and "supported: sqlite:///FILE, postgresql" in line
        assert "pw12" not in line
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- decompression bombs
def test_a_video_declaring_huge_frames_is_refused_in_bounded_memory(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    big = bomb(root / "big.mov")
    assert big.stat().st_size < 1_000_000
    child = ("from eri.features.video import FrameStream, DecodeError\n"  # VmHWM: this process's peak RSS
             f"try:\n    list(FrameStream({str(big)!r}))\nexcept DecodeError as e:\n    print(e)\n"
             "print(next(int(ln.split()[1]) // 1024 for ln in open('/proc/self/status') if ln.startswith('VmHWM')))\n")
    out = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=120)
    message, peak_mb = out.stdout.strip().splitlines()
    assert message.startswith(f"{big}: refused: its video stream declares 8000x8000 frames (64 MP)")
    assert "decode.max_pixels" in message and int(peak_mb) < 400, out  # one decoded RGB frame alone: 192 MB

    tone_video(root / "good.mp4")
    cfg = tmp_path / "face.yaml"
    cfg.write_text("faces: {crop_size: 64}\nextractors:\n  - {name: holistic, config: {random_init: true}}\n")
    assert extract_main(["--config", str(cfg), "--data-root", str(root), "--no-progress"]) == EXIT_PARTIAL
    report = pd.read_csv(root / "extraction_report.csv")
    row = report[report["File_ID"] == "big"].iloc[0]
    assert row["stage"] == "decode" and row["failed"] and "refused" in row["error"] and "\n" not in row["error"]
    assert FeatureStore(root).index("holistic")["File_ID"].tolist() == ["good"]


def test_frames_wider_than_4k_are_downscaled_by_default(tmp_path):
    path = tmp_path / "wide.mp4"
    write_video(path, np.zeros((2, 16, 4000, 3), np.uint8), fps=5, options={"preset": "ultrafast"})
    assert decode(path, audio=False).frames.shape == (2, 16, MAX_SIDE, 3)
    assert decode(path, audio=False, max_side=4000).frames.shape == (2, 16, 4000, 3)


# ----------------------------------------------------------------------------- model files and predict
@pytest.mark.parametrize(
    "spec, expect",
    [
        ({"streams": {"mma": {"extractor": "holistic", "faces": {"every_k": 0}}}}, "faces.every_k = 0 must be >= 1"),
        ({"streams": {"mma": {"extractor": "holistic", "decode": {"fps": -5}}}}, "decode.fps = -5.0 must be > 0"),
        ({"train_mean": [0.5, 0.5, 0.5]}, "train_mean that is not 7 numbers"),
        ({"train_mean": ["a"] * 7}, "train_mean that is not 7 numbers"),
        ({"stream_dims": {"mma": 0}}, "stream_dims that are not positive integers"),
        ({"branches": [{"name": "x", "streams": ["nope"]}]}, "branches[0] without a list of streams"),
        ({"stats": {"mma": {"mean": torch.zeros(3), "std": torch.ones(3)}}}, "stats for 'mma'"),
        ({"eri_version": "99.1.0"}, "was written by eri 99.1.0, newer than this eri"),
    ],
    ids=["every_k 0", "negative fps", "short train_mean", "text train_mean", "zero width", "unknown stream",
         "stats width", "newer eri"],
)
def test_a_model_spec_out_of_range_is_one_line(trained, tmp_path, capsys, spec, expect):
    model = tamper_model(model_file(trained), tmp_path / "model.ckpt", **spec)
    args = ["--checkpoint", str(model), "--video", str(tone_video(tmp_path / "a.mp4")), "--out", str(tmp_path / "p")]
    assert predict_main(args) == EXIT_INPUT
    line = error_line(capsys)
    assert str(model) in line and "its model spec" in line and expect in line
    assert not (tmp_path / "p").exists()


def test_predict_when_no_video_is_readable_writes_nan_rows(trained, tmp_path, capsys):
    meta = {"extractor": "audio", "rate": 2.0, "dim": 26, "dtype": "float16", "config": {}}
    model = tamper_model(model_file(trained), tmp_path / "model.ckpt", streams={"mma": meta})
    (bad := tmp_path / "a.mp4").write_bytes(b"not a video")
    (empty := tmp_path / "b.webm").write_bytes(b"")
    out = tmp_path / "pred"
    assert predict_main(["--checkpoint", str(model), "--video", str(bad), str(empty), "--out", str(out),
                         "--no-figures"]) == EXIT_PARTIAL
    assert "Traceback" not in capsys.readouterr().err
    df = pd.read_csv(out / "predictions.csv")
    assert df["File_ID"].tolist() == ["a", "b"] and df[list(EMOTIONS)].isna().all().all()
    assert df["note"].str.startswith("extraction failed").all() and df["note"].str.contains("a.mp4").any()


# ----------------------------------------------------------------------------- --index-only
def test_index_only_with_changed_settings_refuses_and_keeps_the_index(tmp_path, capsys):
    root, args = audio_store(tmp_path, 2, "{name: audio, config: {n_mfcc: 16}}")
    index = root / "features" / "audio" / "index.csv"
    before = index.read_bytes()
    assert extract_main([*args, "--index-only", "extractors.0.config.n_mfcc=20"]) == EXIT_INPUT
    line = error_line(capsys)
    assert "stream 'audio'" in line and "extracted with other settings" in line
    assert index.read_bytes() == before
    assert extract_main([*args, "--index-only"]) == EXIT_OK  # the settings it was extracted with: indexed
    assert sorted(FeatureStore(root).index("audio")["File_ID"]) == ["v0", "v1"]


def test_an_error_quoting_a_huge_cell_stays_one_short_line(tmp_path, capsys):
    """A 5 MB label cell quoted by the reader: the `error:` line keeps its head and tail, not 5 MB."""
    root = make_random_dataset(tmp_path / "ds", n=(4, 2, 2))
    info = pd.read_csv(root / "data_info.csv")
    info["Adoration"] = info["Adoration"].astype(object)
    info.loc[0, "Adoration"] = "x" * 5_000_000
    info.to_csv(root / "data_info.csv", index=False)
    assert train_main(["--config", str(config(tmp_path, root)), "--out", str(tmp_path / "run")]) == EXIT_INPUT
    line = error_line(capsys)
    assert len(line) < 2100 and "data_info.csv" in line and "characters left out" in line
