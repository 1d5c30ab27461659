"""The ``eri`` console script: every tool is a subcommand, `eri list` names the registered components,
and ``--help`` answers without importing torch (the subcommands import it after parsing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eri.commands import COMMANDS

ERI = Path(sys.executable).with_name("eri")  # the script `pip install -e .` put next to this Python


def _eri(*args: str) -> subprocess.CompletedProcess:
    if not ERI.is_file():
        pytest.fail(f"{ERI} missing: reinstall the package (pip install -e .) after a pyproject.toml change")
    return subprocess.run([str(ERI), *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand():
    res = _eri("--help")
    assert res.returncode == 0, res.stderr
    listed = [line.split()[0] for line in res.stdout.split("commands:\n", 1)[1].splitlines() if line.strip()]
    assert listed == list(COMMANDS)
    tools = {p.stem.replace("_", "-") for p in (Path(__file__).resolve().parents[1] / "tools").glob("*.py")}
    assert tools - {"--init--"} == set(COMMANDS) - {"list"}  # one subcommand per tool


def test_subcommand_help_parses_before_the_heavy_imports():
    """``eri train --help`` exits 0 with the tool's own usage, and parsing imported neither torch nor the
    training code (so a --help or a mistyped flag answers at once)."""
    res = _eri("train", "--help")
    assert res.returncode == 0 and "usage: eri train" in res.stdout and "--config" in res.stdout
    probe = ("import sys\nfrom eri.commands import main\n"
             "for c in sys.argv[1:]:\n    try:\n        main([c, '--help'])\n    except SystemExit as e:\n"
             "        assert e.code == 0, c\nheavy = [m for m in ('torch', 'lightning', 'pandas', 'eri.training.run')"
             " if m in sys.modules]\nprint(heavy)")
    quick = [c for c in COMMANDS if c not in ("make-synthetic", "ablate")]  # their --help lists presets
    res = subprocess.run([sys.executable, "-c", probe, *quick], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_a_mistyped_command_or_flag_is_refused():
    assert _eri("trian").returncode == 2
    res = _eri("train", "--confg", "configs/demo.yaml")
    assert res.returncode == 2 and "--config" in res.stderr


def test_list_prints_each_family_of_components():
    from eri.models.encoders import ENCODERS
    from eri.models.fusion import FUSIONS

    res = _eri("list")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    rows = dict(line.split(": ", 1) for line in lines if not line.startswith(" "))  # indented: an entry's details
    assert rows["encoders"].split() == sorted(ENCODERS) and rows["fusions"].split() == sorted(FUSIONS)
    assert {"holistic", "au", "audio", "mma"} <= set(rows["extractors"].split())
    assert {"combiners", "mma-backbones", "losses", "synthetic-presets", "ablation-tables"} <= set(rows)
    # each encoder with its description, size presets and search knobs, as registered
    at = next(i for i, x in enumerate(lines) if x.startswith("  mean_pool "))
    mean_pool = lines[at:at + 5]
    assert "the mean over real steps" in mean_pool[0]
    assert [x.split()[:2] for x in mean_pool[1:]] == [["preset", "paper:"], ["preset", "demo:"], ["preset", "tiny:"],
                                                      ["search:", "hidden,"]]
    assert "preset tiny: hidden=16 gru_layers=1 blocks=1" in res.stdout and "layers (gru_layers)" in res.stdout
    one = _eri("list", "--brief", "combiners", "losses")  # the first lines only
    assert one.stdout.strip().splitlines() == [f"combiners: {rows['combiners']}", f"losses: {rows['losses']}"]
    bad = _eri("list", "encoder")
    assert bad.returncode == 2 and "unknown family 'encoder'" in bad.stderr
