"""The dataset signature: which labels, splits and stored features a run was trained on.

Training writes it as ``<run>/dataset.json`` and an ensemble directory writes the one its members
share, so that `tools/submit.py` can refuse to label the challenge's test videos with a run whose
label file or feature store has changed since (re-extracted features, an edited data_info.csv, another
split): predictions would silently belong to other data. It is cheap: only the label files, the split
assignment and each stream's ``index.csv`` + ``meta.json`` are hashed, never the feature files.

    {"version": 1, "root": "/abs/root", "layout": "abaw5", "streams": ["audio", ...],
     "labels": {"data_info.csv": sha256}, "splits": {"sha256": ..., "counts": {"train": n, ...}},
     "features": {"<stream>": {"index.csv": sha256, "meta.json": sha256}}}

`differences` compares the content fields only (``labels``, ``splits``, ``features``): a dataset
moved to another folder is still the same dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from eri.constants import SPLITS
from eri.data.dataset import parse_stream
from eri.data.labels import read_manifest
from eri.errors import InputError, LabelError, StoreError
from eri.io import inside, name_problem

VERSION = 1
CONTENT = ("labels", "splits", "features")
FILE = "dataset.json"


def _file_hash(path: Path, error=StoreError) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise error(f"{path} not found") from None
    except OSError as e:
        raise error(f"{path} cannot be read ({type(e).__name__}: {e})") from None


def resolve_layout(root: Path, layout: str = "auto") -> str:
    """``abaw5`` or ``muse2022``: the layout ``auto`` stands for in this root (as `read_manifest` picks it)."""
    if layout != "auto":
        return layout
    return "abaw5" if (root / "data_info.csv").exists() else "muse2022"


def label_files(root: Path, layout: str) -> list[str]:
    return ["data_info.csv"] if resolve_layout(root, layout) == "abaw5" else ["labels.csv", "partition.csv"]


def _stream_hashes(root: Path, name: str) -> dict:
    """The stream's index.csv + meta.json hashes (npz store), or a hash of the file names and sizes of
    ``feats/<name>/`` (MuSe 2022 organiser CSVs, which have no index)."""
    if name_problem(name):
        raise StoreError(f"{root}: bad stream name {name_problem(name)}")
    if (root / "features").is_dir():
        folder = inside(root / "features", name)
        return {f: _file_hash(folder / f) for f in ("index.csv", "meta.json")}
    folder = inside(root / "feats", name)
    if not folder.is_dir():
        raise StoreError(f"{root}: no feature store (features/{name}) or MuSe 2022 folder (feats/{name}) found")
    listing = sorted((p.name, p.stat().st_size) for p in folder.glob("*.csv"))
    return {"listing": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}


def dataset_signature(root: str | Path, streams, layout: str = "auto") -> dict:
    """The signature of ``root`` as read with ``streams`` (names or specs such as ``au[0:17]``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset root {root} does not exist")
    layout = resolve_layout(root, layout)
    manifest = read_manifest(root, layout)
    by_split = {s: manifest.loc[manifest["split"] == s, "File_ID"].tolist() for s in SPLITS}
    names = sorted(dict.fromkeys(parse_stream(s)[0] for s in streams))
    return {
        "version": VERSION,
        "root": str(root.resolve()),
        "layout": layout,
        "streams": names,
        "labels": {f: _file_hash(root / f, LabelError) for f in label_files(root, layout)},
        "splits": {"sha256": hashlib.sha256(json.dumps(by_split).encode()).hexdigest(),
                   "counts": {s: len(v) for s, v in by_split.items()}},
        "features": {n: _stream_hashes(root, n) for n in names},
    }


def read_signature(path: str | Path) -> dict | None:
    """A saved ``dataset.json`` (None when absent); a damaged one is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        sig = json.loads(path.read_text())
        if not isinstance(sig, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path} is damaged ({type(e).__name__}: {e})") from None
    return sig


def differences(saved: dict, now: dict, common_streams: bool = False) -> list[str]:
    """What differs between two signatures, in words (empty: the same data). ``common_streams``: compare
    only the streams both read (ensemble members may read different streams of one store)."""
    out = []
    for f in sorted(set(saved.get("labels", {})) | set(now.get("labels", {}))):
        if saved.get("labels", {}).get(f) != now.get("labels", {}).get(f):
            out.append(f"{f} changed")
    if saved.get("splits", {}).get("sha256") != now.get("splits", {}).get("sha256"):
        counts = [sig.get("splits", {}).get("counts") for sig in (saved, now)]
        out.append(f"split assignment changed ({counts[0]} -> {counts[1]})")
    a, b = saved.get("features", {}), now.get("features", {})
    for s in sorted(set(a) & set(b) if common_streams else set(a) | set(b)):
        if s not in a or s not in b:
            out.append(f"stream {s} {'not read then' if s not in a else 'not read now'}")
            continue
        out += [f"features/{s}/{f} changed" for f in sorted(set(a[s]) | set(b[s])) if a[s].get(f) != b[s].get(f)]
    return out


def shared_signature(signatures: dict[str, dict]) -> dict:
    """One signature for an ensemble from its members' (name -> signature): theirs when they all agree
    on the content (each stream's hashes from whichever member read it), else
    ``{"agree": false, "members": {...}, "differences": {...}}``."""
    names = list(signatures)
    ref = signatures[names[0]]
    diff = {n: differences(ref, signatures[n], common_streams=True) for n in names[1:]}
    diff = {n: d for n, d in diff.items() if d}
    if not diff:
        features = {k: v for sig in signatures.values() for k, v in sig.get("features", {}).items()}
        return {**ref, "streams": sorted(features), "features": dict(sorted(features.items())), "agree": True,
                "members": names}
    return {"agree": False, "members": signatures, "differences": {f"{names[0]} vs {n}": d for n, d in diff.items()}}
