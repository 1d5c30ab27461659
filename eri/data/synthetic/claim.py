"""Which folders a synthetic generator may write into: a new or empty one, or one it already started.

A generator writes many files (labels, features, images) and must never overwrite a user's own
``data_info.csv`` or features because a config asked for synthetic data. Before its first file it
writes a small marker, ``.eri-synthetic.json`` (what is being generated: generator, preset, seed,
knob hash), so an interrupted run can be resumed: a non-empty folder is accepted only when its
marker (or, for folders written before markers existed, its complete ``synthetic.json``) names the
same data. Anything else is refused with one line saying what to do instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from eri.errors import ConfigError
from eri.io import atomic_write_text

MARKER = ".eri-synthetic.json"


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(d: dict) -> str:
    return ", ".join(f"{k} {d.get(k)}" for k in ("preset", "seed", "config_hash") if k in d)


def claim_folder(root: str | Path, want: dict, advice: str, complete: str = "synthetic.json",
                 complete_keys: tuple[str, ...] = ("generator", "preset", "seed", "config_hash")) -> Path:
    """Make ``root`` the generator's folder for ``want`` (the marker's content) or refuse (`ConfigError`).

    Accepted: a missing or empty folder (the marker is written first), a folder whose marker equals
    ``want``, or one without a marker whose ``complete`` file (written last, so the data is complete)
    holds ``complete_keys`` as ``want`` does (the marker is then added). ``advice``: what the user can
    do instead, for the message.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file, not a folder: synthetic data needs a new or empty folder; {advice}")
    marker = root / MARKER
    # a temporary file of an interrupted marker write (eri.io.atomic_write_text) does not count
    entries = sorted(p.name for p in root.iterdir() if not p.name.startswith(f".{MARKER}.")) if root.is_dir() else []
    if entries:
        keys = tuple(want) if MARKER in entries else complete_keys
        have = read_json(marker) if MARKER in entries else read_json(root / complete) if complete in entries else None
        if have is None or not any(k in have for k in keys):
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise ConfigError(f"{root} holds files eri did not generate ({shown}): synthetic data is only "
                              f"written into a new or empty folder; {advice}")
        if any(have.get(k) != want.get(k) for k in keys):
            raise ConfigError(
                f"{root} holds synthetic data generated for {_describe(have) or 'something else'}, not "
                f"{_describe(want)}; use another (new or empty) folder for it"
            )
        if MARKER in entries:
            return root
    atomic_write_text(marker, json.dumps(want, sort_keys=True))
    return root
