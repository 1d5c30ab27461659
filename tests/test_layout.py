"""The house rules a maintainer relies on: no import cycle between eri's subpackages, short files,
every encoder size defined once (a preset changes the demo, benchmark, ablation and search), and a
README layout block that matches the tree."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ERI = ROOT / "eri"


def _imports() -> dict[str, set[str]]:
    """Subpackage (or top-level module) -> the eri subpackages it imports, at any depth of the code."""
    edges: dict[str, set[str]] = {}
    for path in ERI.rglob("*.py"):
        rel = path.relative_to(ERI)
        here = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "eri" and len(parts) > 1 and parts[1] != here:
                    edges.setdefault(here, set()).add(parts[1])
                assert name != "eri" or here == "__init__", f"{rel} imports the eri package root"
    return edges


def test_no_import_cycle_between_subpackages():
    edges = {k: v for k, v in _imports().items() if k != "__init__"}  # the root is the API facade

    def visit(node, path):
        if node in path:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(node):] + [node])}")
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, path + [node])

    for node in sorted(edges):
        visit(node, [])
    assert "mma" not in edges.get("features", set()) or "features" not in edges.get("mma", set())
    assert "training" not in edges.get("features", set()) and "inference" not in edges.get("training", set())


def test_files_are_short_or_say_why():
    long = [p for p in ERI.rglob("*.py") if len(p.read_text().splitlines()) > 450
            and "Long because" not in (ast.get_docstring(ast.parse(p.read_text())) or "")]
    assert not long, long


def test_a_preset_sizes_the_demo_benchmark_ablation_and_search(monkeypatch):
    from eri.benchmarks.training import bench_model
    from eri.config import load_config
    from eri.models.presets import ENCODER_PRESETS
    from eri.search.ablate import TABLES, resolve
    from eri.search.space import Space
    from eri.search.study import load_search_config

    monkeypatch.setitem(ENCODER_PRESETS["gru_transformer"], "demo", {**ENCODER_PRESETS["gru_transformer"]["demo"], "hidden": 48})
    monkeypatch.setitem(ENCODER_PRESETS["gru_transformer"], "tiny", {**ENCODER_PRESETS["gru_transformer"]["tiny"], "hidden": 24})

    def widths(cfg):
        return {b.encoder.hidden for b in cfg.model.branches if b.encoder.name == "gru_transformer"}

    assert widths(load_config("configs/demo.yaml")) == {48}
    demo = TABLES["demo-variants"]
    assert all(widths(resolve(demo, r, "hume-small", 0)) <= {48} for r in demo.rows)
    assert bench_model("gru_transformer", "demo").branches["visual"].encoder.out_dim == 48
    t = TABLES["004-table2"]
    assert widths(resolve(t, t.rows[-1], "hume-small", 0)) == {48} and widths(resolve(t, t.rows[-1], "tiny", 0)) == {24}
    assert widths(Space(load_search_config("configs/search/fusion.yaml")).base) == {48}
    assert widths(Space(load_search_config("configs/search/tiny.yaml")).base) == {24}


def test_presets_expand_and_explicit_keys_win():
    from eri.config import load_config
    from eri.errors import ConfigError

    cfg = load_config("configs/demo.yaml", ["model.branches.0.encoder.hidden=32", "model.preset=tiny"])
    assert cfg.model.branches[0].encoder.hidden == 32 and cfg.model.branches[1].encoder.hidden == 16
    assert "preset" not in cfg.model.branches[0].encoder  # expanded: the saved config holds every size
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        load_config("configs/demo.yaml", ["model.branches.0.encoder.preset=huge"])


def test_the_commands_package_is_a_leaf_and_tools_are_thin():
    """eri.commands imports the rest; nothing imports it (the tools call it). A tool never edits sys.path:
    eri is installed (`pip install -e .`), so `python tools/x.py` and `eri x` run the same code."""
    importers = sorted(k for k, v in _imports().items() if "commands" in v)
    assert importers == [], f"{importers} import eri.commands"
    tools = Path(__file__).resolve().parents[1] / "tools"
    edits = [p.name for p in tools.glob("*") if p.is_file() and "sys.path.insert" in p.read_text()]
    assert not edits, f"tools/{edits} edit sys.path"


def test_inference_reads_run_directories_through_eri_runs_not_training():
    """Loading a model needs the run directory's layout (`eri.runs`), never the training code: a
    prediction-only install should not pull the trainer in."""
    found = []
    for path in (ERI / "inference").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.name}: {name}" for name in names if name.split(".")[:2] == ["eri", "training"]]
    assert not found, f"eri/inference imports the training code: {found}"


def test_the_readme_layout_block_matches_the_tree():
    """Every module and subpackage of eri/ is named in the README's layout block (a subpackage's modules
    in its own entry, by file name or stem), and every ``name.py`` the block names exists (in eri/, tests/
    or tools/)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("```\neri/\n") + 4 :]
    block = block[: block.index("```")]
    entries, current = {}, None  # "" for top-level lines, else the subpackage whose entry a line continues
    for line in block.splitlines()[1:]:
        m = re.match(r"  (\S+)", line)
        if m:
            current = m.group(1).rstrip("/") if m.group(1).endswith("/") else ""
        entries.setdefault(current, []).append(line)
    top = "\n".join(entries[""])
    missing = [p.name for p in (ROOT / "eri").glob("*.py") if p.stem != "__init__" and p.name not in top]
    for pkg in sorted(p for p in (ROOT / "eri").iterdir() if (p / "__init__.py").is_file()):
        assert pkg.name in entries, f"README layout block has no entry for eri/{pkg.name}/"
        if pkg.name == "commands":  # one module per subcommand: `eri --help` lists them
            continue
        said = "\n".join(entries[pkg.name])
        missing += [f"{pkg.name}/{p.relative_to(pkg)}" for p in pkg.rglob("*.py")
                    if p.stem != "__init__" and not re.search(rf"\b{p.stem}\b", said)]
    assert not missing, f"README layout block does not name: {missing}"
    named = set(re.findall(r"\b(\w+\.py)\b", block))
    files = {p.name for folder in ("eri", "tests", "tools") for p in (ROOT / folder).rglob("*.py")}
    assert named <= files, f"README layout block names files that do not exist: {sorted(named - files)}"
