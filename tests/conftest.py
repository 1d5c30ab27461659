"""Shared fixtures: a tiny random dataset in the ABAW5 layout (for loader/model tests that do not
need learnable signal), and the synthetic `tiny` preset (for end-to-end tests)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eri.constants import EMOTIONS  # noqa: E402
from eri.data.store import FeatureStore  # noqa: E402


def make_random_dataset(root: Path, n=(12, 6, 6), dims=None, seed=0, short=(), no_audio=()) -> Path:
    """Random features (no signal) in the ABAW5 layout. ``short``: ids given only 10 valid frames."""
    dims = dims or {"mma": 26, "au": 34, "audio": 64}
    rng = np.random.default_rng(seed)
    rows, k = [], 0
    store = FeatureStore(root)
    index = {s: [] for s in dims}
    for split, count in zip(("Train", "Val", "Test"), n):
        for _ in range(count):
            k += 1
            vid = f"{k:05d}"
            y = rng.uniform(0, 1, 7)
            y /= y.max()
            rows.append({"File_ID": f"[{vid}]", "Split": split, **dict(zip(EMOTIONS, y)), "Age": 30, "Country": "United States"})
            t = int(rng.integers(60, 120))
            valid = np.ones(t, bool)
            if vid in short:
                valid[10:] = False
            for s, d in dims.items():
                steps = t if s != "audio" else (0 if vid in no_audio else max(1, t // 12))
                v = valid if s != "audio" else np.ones(steps, bool)
                rate = 25.0 if s != "audio" else 2.0  # as meta.json says below
                store.write(s, vid, rng.normal(size=(steps, d)).astype(np.float16), v, np.arange(steps) / rate)
                index[s].append({"File_ID": vid, "n_steps": steps, "n_valid": int(v.sum())})
    for s, d in dims.items():
        store.write_meta(s, {"stream": s, "dim": d, "rate": "frame" if s != "audio" else 2.0, "dtype": "float16"})
        store.write_index(s, index[s])
    pd.DataFrame(rows).to_csv(root / "data_info.csv", index=False)
    return root


@pytest.fixture(scope="session")
def random_root(tmp_path_factory) -> Path:
    return make_random_dataset(tmp_path_factory.mktemp("random"), short=("00002", "00015"), no_audio=("00020",))


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    from eri.data.synthetic import ensure_synthetic

    return ensure_synthetic(tmp_path_factory.mktemp("synthetic") / "tiny", "tiny", seed=0)


# tiny-faces shrunk to 14 short videos: what the end-to-end tests (test_mma_e2e.py, test_ablate.py) train on
FACES = {"n_train": 6, "n_val": 4, "n_test": 4, "duration_min": 5.5, "duration_max": 6.0}


@contextlib.contextmanager
def faces_preset():
    """The `tiny-faces` preset shrunk to FACES while the block runs (the generator checks its knobs on every use)."""
    from eri.data.synthetic import PRESETS

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "tiny-faces", {**PRESETS["tiny-faces"], **FACES})
        yield


@pytest.fixture(scope="session")
def faces_root(tmp_path_factory) -> Path:
    """The shrunk tiny-faces videos and their crops stream, made once per session as training makes them."""
    from eri.config import load_config
    from eri.training.run import prepared_datamodule

    import lightning as L

    root = tmp_path_factory.mktemp("faces") / "D"
    L.seed_everything(0, verbose=False)
    with faces_preset():
        prepared_datamodule(load_config("configs/mma_mrnnet_e2e.yaml", [f"data.root={root}", "data.synthetic=tiny-faces",
                                                                          "model.preset=tiny", "data.min_valid_frames=10"]),
                            "fit", progress=False)
    FACES_RNG.update(_draws())  # what the seeded stream gives after generating videos and crops (test_train)
    return root


FACES_RNG: dict = {}


def _draws() -> dict:
    import random

    import numpy as np
    import torch

    return {"torch": torch.rand(4).tolist(), "numpy": np.random.rand(4).tolist(), "python": random.random()}


def tiny_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    """Point a shipped config at the tiny synthetic set and keep it fast."""
    return [f"data.root={root}", "data.synthetic=tiny", f"out={out}", "trainer.progress_bar=false", *extra]


@pytest.fixture
def local_postgres():
    """A throwaway PostgreSQL server on loopback (tests/local_postgres.py), stopped and deleted after the test."""
    from local_postgres import LocalPostgres

    with LocalPostgres() as pg:
        yield pg
