"""The README's commands work as written: every ``python tools/<x>.py ...`` it shows names a tool that
exists, a subcommand that tool has, and only flags its parser accepts (a fast static check of each
command against the tool's own ``--help``; `tools/check_readme.sh` runs the cheap ones for real)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python tools/(\w+)\.py([^`#\n]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def readme_commands() -> list[tuple[str, str]]:
    """(tool, the rest of the command) for every tool command the README shows."""
    return COMMAND.findall((ROOT / "README.md").read_text())


def _help(tool: str, sub: str | None, capsys) -> str:
    module = importlib.import_module(f"tools.{tool}")
    with pytest.raises(SystemExit) as e:
        module.main([*([sub] if sub else []), "--help"])
    assert e.value.code == 0, (tool, sub)
    return capsys.readouterr().out


def test_the_readme_shows_commands_of_every_kind():
    tools = {t for t, _ in readme_commands()}
    assert {"train", "evaluate", "extract", "predict", "ablate", "ensemble", "search", "compare", "benchmark"} <= tools


def test_every_readme_command_names_a_tool_subcommand_and_flags_that_exist(capsys):
    helps: dict[tuple[str, str | None], str] = {}
    wrong = []
    for tool, rest in readme_commands():
        if not (ROOT / "tools" / f"{tool}.py").is_file():
            wrong.append(f"tools/{tool}.py does not exist")
            continue
        words = rest.split()
        sub = None
        if tool == "benchmark":  # the one tool with subcommands
            sub = words[0] if words and not words[0].startswith("-") else None
            if sub is None:
                wrong.append(f"tools/benchmark.py{rest}: no subcommand")
                continue
        key = (tool, sub)
        if key not in helps:
            try:
                helps[key] = _help(tool, sub, capsys)
            except BaseException as e:  # noqa: BLE001 - an unknown subcommand exits 2: report it
                wrong.append(f"tools/{tool}.py {sub or ''}: --help failed ({type(e).__name__}: {e})")
                continue
        accepted = set(FLAG.findall(helps[key])) | {"--help"}
        wrong += [f"tools/{tool}.py{rest}: {flag} is not a flag of the tool" for flag in FLAG.findall(rest)
                  if flag not in accepted]
    assert not wrong, "\n".join(wrong)


def test_the_check_finds_a_wrong_flag(capsys):
    """The check itself can fail: a flag the parser does not have is not in its help."""
    accepted = set(FLAG.findall(_help("ablate", None, capsys)))
    assert "--table" in accepted and "--tables" not in accepted and "--preset" in accepted
