"""The `>>>` examples in the package's docstrings run, as written (doctest): the API reference shows them."""

from __future__ import annotations

import doctest
import importlib
import io
import pathlib

import pytest

import shardflow

PACKAGE = pathlib.Path(shardflow.__file__).parent


def modules_with_examples() -> list[str]:
    """Every module of the package whose source holds a `>>>` example, wherever it lives in the tree."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE).with_suffix("").parts
            names.append(".".join(("shardflow",) + (parts[:-1] if parts[-1] == "__init__" else parts)))
    return names


def test_the_examples_are_found():
    assert len(modules_with_examples()) >= 4


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
    assert runner.tries > 0, f"{name}: no example ran"
