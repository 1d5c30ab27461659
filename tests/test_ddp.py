"""Lightning's own DDP on 2 CPU processes (gloo): the split-level PCC is computed over all ranks'
predictions, so it equals the 1-process number."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_overrides

DDP = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu"]


def _tool(*args, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, tiny_root):
    out = tmp_path_factory.mktemp("ddp")
    _tool("tools/train.py", "--config", "configs/demo.yaml",
          *tiny_overrides(tiny_root, out, "trainer.max_epochs=2", "data.batch_size=8", *DDP))
    return out


def test_two_process_training_writes_a_complete_run(ddp_run):
    metrics = json.loads((ddp_run / "metrics.json").read_text())
    assert {"val", "test"} <= set(metrics)
    assert len((ddp_run / "predictions_val.csv").read_text().splitlines()) == 1 + 16  # every val video once


@pytest.mark.parametrize("devices", [1, 2])
def test_metric_is_the_same_on_one_and_two_processes(ddp_run, devices, tmp_path):
    """The 2-process run's metrics.json, re-scored with 1 and with 2 processes, agree to 1e-5: each rank pads
    its own batches, so float32 outputs differ in their last bits (a per-rank metric averaged would be ~1e-2 off)."""
    saved = json.loads((ddp_run / "metrics.json").read_text())
    extra = DDP if devices == 2 else ["trainer.devices=1", "trainer.accelerator=cpu"]
    _tool("tools/evaluate.py", "--run", str(ddp_run), "--json", str(tmp_path / "s.json"), *extra)
    scores = json.loads((tmp_path / "s.json").read_text())
    for split in ("val", "test"):
        assert scores[split]["mean_pcc"] == pytest.approx(saved[split]["mean_pcc"], abs=1e-5)
        for emotion, r in saved[split]["pcc"].items():
            assert scores[split]["pcc"][emotion] == pytest.approx(r, abs=1e-5)
