"""Which videos a dataset root holds: the ABAW5, MuSe 2022 or plain-folder layout, media found
anywhere under the root by id, ids validated where they enter, and shards."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tqdm import tqdm

from eri.config import ConfigError
from eri.data.labels import LabelError, normalise_id, read_label_ids, read_manifest
from eri.errors import InputError
from eri.io import name_problem

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")


def find_media(folder: Path) -> tuple[dict[str, Path], dict[str, Path], list[dict]]:
    """Videos and ``.wav`` files under ``folder`` by normalised id, and the report rows of files left
    out: a name that is not a usable id, or an id with two files (neither is used: which is meant?)."""
    found: dict[str, dict[str, list[Path]]] = {"video": {}, "wav": {}}
    problems: list[dict] = []
    for p in sorted(folder.rglob("*")):
        ext = p.suffix.lower()
        if p.name.startswith(".") or not p.is_file() or (ext not in VIDEO_EXTS and ext != ".wav"):
            continue
        if "features" in p.relative_to(folder).parts[:1]:
            continue
        vid = normalise_id(p.stem)
        problem = name_problem(vid)
        if problem:
            problems.append(report_row(repr(p.stem), "*", "find", f"{p}: file name is not a usable id ({problem})"))
        else:
            found["wav" if ext == ".wav" else "video"].setdefault(vid, []).append(p)
    media: dict[str, dict[str, Path]] = {"video": {}, "wav": {}}
    for kind, by_id in found.items():
        for vid, paths in by_id.items():
            if len(paths) == 1:
                media[kind][vid] = paths[0]
            else:
                problems.append(report_row(vid, "*", "find", f"{len(paths)} {kind} files for id {vid}: {', '.join(map(str, paths))}"))
    return media["video"], media["wav"], problems


def report_row(vid: str, stream: str, stage: str, error: str, failed: bool = True) -> dict:
    return {"File_ID": vid, "stream": stream, "stage": stage, "error": error, "failed": failed}


def list_videos(root: str | Path, layout: str = "auto", videos_dir: str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """The videos of a dataset: ``File_ID``, ``path`` (None when no file), ``wav`` (None), in id order,
    and report rows for what was left out. A label file with bad labels is a warning here (extraction
    needs ids, not labels); ids that are not plain file names are left out and reported."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--data-root: {root} does not exist or is not a folder")
    media_dir = root / videos_dir if videos_dir else root
    if not media_dir.is_dir():
        raise ConfigError(f"videos_dir: {media_dir} does not exist or is not a folder")
    videos, wavs, problems = find_media(media_dir)
    if layout == "auto":
        layout = (
            "abaw5" if (root / "data_info.csv").exists() else "muse2022" if (root / "labels.csv").exists() else "folder"
        )
    if layout == "folder":
        ids = sorted(videos)
        if not ids and not problems:
            raise InputError(f"{media_dir}: no video files ({', '.join(VIDEO_EXTS)}) found")
    else:
        try:
            ids = sorted(read_manifest(root, layout)["File_ID"])
        except LabelError as e:
            tqdm.write(f"warning: {e}; extracting the ids it lists anyway (training will refuse it until it is fixed)")
            ids, bad = read_label_ids(root, layout)
            problems += [report_row("?", "*", "labels", msg) for msg in bad]
            ids = sorted(ids)
    table = pd.DataFrame({"File_ID": ids, "path": [videos.get(i) for i in ids], "wav": [wavs.get(i) for i in ids]})
    return table, problems


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"k/n"`` (0 <= k < n) -> (k, n); None -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        k, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like K/N with 0 <= K < N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise ConfigError(f"--shard {text}: need 0 <= K < N (K is 0-based)")
    return k, n
