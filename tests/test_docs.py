"""The README stays a working front door: its links lead somewhere, it names every command, it stays short, and
the code in it and in docs/ works: command lines parse, Python blocks compile and import what exists, the quick
start runs. (`make docs` builds docs/ with `mkdocs build --strict`, which checks the pages' links and references.)"""

from __future__ import annotations

import ast
import importlib
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from shardflow.beam_jobs.convert import unknown_beam_options
from shardflow.cli import _commands, _parser

ROOT = pathlib.Path(__file__).parent.parent
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def relative_links(path: pathlib.Path) -> list[str]:
    return [target for target in LINK.findall(path.read_text()) if "://" not in target]


def test_the_readme_links_lead_to_files():
    for page in [README, ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "RESULTS.md"]:
        for target in relative_links(page):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_readme_names_every_command():
    text = README.read_text()
    for command in _commands():
        assert f"`shardflow {command.name}" in text, f"README.md's table of commands lacks `shardflow {command.name}`"


def test_the_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


# -- the code blocks of the README and docs/ ------------------------------------------------------------------------
# Each command line is parsed by the CLI's own parser (convert's extra options by Beam's); each Python block is
# compiled and what it imports from shardflow must exist; the README's quick start runs for real (slow, smaller).

PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def code_blocks(page: pathlib.Path, languages: tuple[str, ...]) -> list[str]:
    return [body for language, body in BLOCK.findall(page.read_text()) if language in languages]


def command_lines(page: pathlib.Path) -> list[list[str]]:
    """Every `shardflow ...` line (continued by a backslash) of the page's shell blocks, split as a shell would."""
    commands = []
    for block in code_blocks(page, ("", "sh", "bash", "shell", "console")):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("shardflow "):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_line_in_the_docs_parses(page, capsys):
    parser = _parser()
    for argv in command_lines(page):
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"{page.name}: `shardflow {shlex.join(argv)}`: {capsys.readouterr().err.strip()}")
        if args.command == "convert":
            assert not unknown_beam_options(extra), f"{page.name}: `shardflow {shlex.join(argv)}`"
        else:
            assert not extra, f"{page.name}: `shardflow {shlex.join(argv)}`: unrecognized {extra}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_python_block_in_the_docs_compiles_and_its_imports_exist(page):
    for block in code_blocks(page, ("python", "py")):
        tree = ast.parse(block, page.name)  # a SyntaxError names the page
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shardflow"):
                module = importlib.import_module(node.module)
                missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
                assert not missing, f"{page.name}: `from {node.module} import` {missing}: no such names"


@pytest.mark.slow
def test_the_readme_quick_start_runs(tmp_path):
    """The README's quick start, command line then Python, on 60 images for one epoch."""
    shell = next(block for block in code_blocks(README, ("",)) if "shardflow sample-data" in block)
    python = code_blocks(README, ("python",))[0]
    smaller = {"--n 2000": "--n 60", "--epochs 10": "--epochs 1", "epochs=10": "epochs=1"}
    for before, after in smaller.items():
        assert before in shell + python, f"the quick start no longer says {before}: update this test"
        shell, python = shell.replace(before, after), python.replace(before, after)
    cli = f"{shlex.quote(sys.executable)} -m shardflow.cli"
    script = "set -e\n" + "\n".join(re.sub(r"^shardflow ", f"{cli} ", line) for line in shell.splitlines())
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "this image is" in done.stdout
    (tmp_path / "python").mkdir()
    shutil.copytree(tmp_path / "raw", tmp_path / "python" / "raw")
    done = subprocess.run(
        [sys.executable, "-c", python], cwd=tmp_path / "python", env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
