"""The README stays a working front door: its links lead somewhere, it names every command, and it stays short.
(`make docs` builds docs/ with `mkdocs build --strict`, which checks the pages' own links and references.)"""

from __future__ import annotations

import pathlib
import re

from shardflow.cli import _commands

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
