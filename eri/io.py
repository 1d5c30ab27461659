"""File plumbing every part of eri shares, and the trust boundary for files from other people.

- Atomic writes: a temporary file beside the target, renamed into place, created with the
  permissions the umask gives (``mkstemp`` alone would make every file ``0600``).
- `load_torch`: checkpoints and weights are loaded with ``torch.load(weights_only=True)``: tensors
  and plain values only, so a file from a stranger cannot run code. A well-formed pickle that needs
  Python objects or code is refused as unsafe (`UnsafeFileError`), told apart from a damaged file.
- `check_name` / `inside`: ids and stream names become file names; they must be plain names (no
  separator, no ``..``, not absolute, no control character), and every path built from them must
  stay inside its store.
- `mask_secrets`: passwords in URLs (``scheme://user:password@host``, ``?password=``) are masked
  wherever a URL is printed, logged or saved; it scans in linear time, as it runs on untrusted text
  (an error message quoting a 5 MB label cell).
- `stable_hash`: the short content hash that names configs, stores and runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
import threading
import warnings
from pathlib import Path

from eri.errors import CheckpointError, InputError, UnsafeFileError, WeightsError

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask: from /proc on Linux (no side effect), else set and set back under a lock."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it into place.

    A reader never sees a half-written file, an interrupted job leaves no partial output, and the
    file gets the permissions of a plain ``open(path, "w")`` under the current umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


# ----------------------------------------------------------------------------- checkpoints and weights
def load_torch(path: str | Path, what: str = "checkpoint", map_location="cpu"):
    """``torch.load(path, weights_only=True)``. A missing file is a `WeightsError`, a damaged one a
    `CheckpointError`, one that needs pickled objects an `UnsafeFileError`; each names ``path``
    (``what`` says what the file was meant to be)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} {path} not found")
    try:
        with warnings.catch_warnings():  # a raw pickle's protocol: the refusal below says it better
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        why = _refused_pickle(path, str(e))
        if why is None:
            raise CheckpointError(f"{what} {path} is damaged or not a PyTorch file ({_first_line(e)})") from None
        raise UnsafeFileError(
            f"{what} {path} refused as unsafe: {why}; eri only loads tensors and plain values (torch.load "
            "weights_only=True). If you trust its author, re-save only its tensors: "
            "torch.save(obj['state_dict'] or obj.state_dict(), new_path)"
        ) from None
    except Exception as e:  # noqa: BLE001 - a truncated zip, a text file, a directory: all "damaged"
        raise CheckpointError(f"{what} {path} is damaged or not a PyTorch file ({_first_line(e)})") from None


def _refused_pickle(path: Path, message: str) -> str | None:
    """Why torch's weights-only unpickler refused ``path``, when it is a well-formed pickle that needs
    code or objects; None when the file is damaged (or no pickle at all)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"it holds pickled Python objects (it needs {found.group(1)})"
    if not _is_pickle(path):
        return None
    import pickletools

    op = re.search(r"Unsupported operand (\d+)", message)
    code = chr(int(op.group(1))) if op and int(op.group(1)) < 256 else None
    name = f" (opcode {pickletools.code2op[code].name})" if code in pickletools.code2op else ""
    return f"it is a Python pickle with instructions weights_only will not run{name}, not tensors saved by torch.save"


def _is_pickle(path: Path, limit: int = 64 * 2**20) -> bool:
    """Whether ``path`` (or the ``data.pkl`` of a torch zip) parses as a complete pickle stream; the
    opcodes are read by `pickletools`, never run. Only the first ``limit`` bytes are looked at."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is None or z.getinfo(name).file_size > limit:
                    return False
                data = z.read(name)
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
        return any(op.name == "STOP" for op, _, _ in pickletools.genops(io.BytesIO(data)))
    except Exception:  # noqa: BLE001 - anything unparsable is damaged, not a pickle
        return False


_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue", "In PyTorch 2.6")


def _first_line(e: Exception) -> str:
    """The informative line of an exception message (torch.load's wrap theirs in paragraphs of advice)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not any(b in ln for b in _BOILERPLATE)]
    return f"{type(e).__name__}: {lines[0] if lines else str(e)[:120]}"[:300]


# ----------------------------------------------------------------------------- names and paths
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name) -> str | None:
    """Why ``name`` cannot be used as a file name inside a store, or None when it is a plain name."""
    if name is None or not isinstance(name, str):
        return f"{name!r} is not a text id"
    if not name or name.strip() != name:
        return f"{name!r} is empty or has surrounding spaces"
    if name in (".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        return f"{name!r} contains a path separator"
    if ".." in name:
        return f"{name!r} contains '..'"
    if name.startswith(".") or name.startswith("~"):
        return f"{name!r} starts with '{name[0]}'"
    if _CONTROL.search(name):
        return f"{name!r} contains a control character"
    if len(name.encode()) > 200:
        return f"{name[:20]!r}... is longer than 200 bytes"
    return None


def check_name(name, where: str) -> str:
    """``name`` when it is a plain file name, else an `InputError` naming ``where`` it came from."""
    problem = name_problem(name)
    if problem:
        raise InputError(f"{where}: bad id {problem}: ids must be plain file names")
    return name


def inside(root: str | Path, *parts: str) -> Path:
    """``root / parts...``, refused unless it lies inside ``root`` (after normalising ``..``)."""
    base = os.path.abspath(root)
    path = os.path.normpath(os.path.join(base, *parts))
    if os.path.commonpath([base, path]) != base or path == base:
        raise InputError(f"{os.path.join(str(root), *parts)} lies outside {root}: refused")
    return Path(path)


# ----------------------------------------------------------------------------- secrets
_QUERY_PASSWORD = re.compile(r"(?i)(?P<head>\b(?:password|passwd|pwd)=)[^&\s]*")
_SPACE = re.compile(r"(\s+)")
_USER = re.compile(r"[^:/@]*")


def _mask_url_password(token: str) -> str:
    """``x://user:pw@host`` -> ``x://user:***@host`` in a token without whitespace; the password runs to
    the token's last ``@`` (a password may hold ``@``). One pass: a regex that retried ``\\S*@`` from
    every ``://`` was quadratic (a 60 KB label cell took 40 s to print)."""
    last_at = token.rfind("@")
    i = token.find("://")
    while 0 <= i < last_at:
        user_end = _USER.match(token, i + 3).end()  # stops at the first ':', '/' or '@'
        if user_end < last_at and token[user_end] == ":":
            return token[: user_end + 1] + "***" + token[last_at:]
        i = token.find("://", i + 3)
    return token


def mask_secrets(text) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (also ``password=``
    query arguments), in any text; everything else is left as it is. Linear in the text's length."""
    parts = _SPACE.split(str(text))
    text = "".join(_mask_url_password(p) if "://" in p else p for p in parts)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}***", text)


# ----------------------------------------------------------------------------- hashes
def stable_hash(obj, algorithm: str = "sha256", length: int = 12) -> str:
    """Short hex hash of a JSON-able object; key order does not matter."""
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.new(algorithm, blob.encode()).hexdigest()[:length]
