"""The package's layers, as the tree shows them, held: imports run downward only (core <- beam_jobs, pipeline <-
trainers, tools; cli on top, and `command`, the entry point, above it), the core imports neither Keras nor Beam,
and the tools over a finished dataset (verify, diff, inspect) never load Keras.

Imports are read from each module's syntax tree (`ast`): every import statement, at the top, in a function or
under TYPE_CHECKING, counts; `from shardflow.core import schema` names the module `shardflow.core.schema`; and
importing a module also runs the `__init__` of each package above it. A fresh interpreter where Keras cannot be
imported then runs the tools, to check what the syntax cannot show."""

from __future__ import annotations

import ast
import functools
import importlib.util
import pathlib
import subprocess
import sys
import textwrap

PACKAGE = pathlib.Path(__file__).parent.parent / "shardflow"

# The shardflow layers each layer's modules may import besides their own ("shardflow" is the root package's
# __init__, which imports nothing: every layer may read its __version__).
MAY_IMPORT = {
    "shardflow": set(),
    "core": set(),
    "testing": {"core"},
    "beam_jobs": {"core"},
    "pipeline": {"core"},
    "trainers": {"core", "pipeline"},
    "tools": {"core", "pipeline"},  # pipeline: preview shows `load`'s augmentation; verify, diff, inspect: below
    "cli": {"core", "testing", "beam_jobs", "pipeline", "trainers", "tools"},
    "command": {"core", "cli"},  # the `shardflow` command's entry point: cli, imported where Ctrl-C is caught
}
KERAS = ("keras", "tf_keras", "tensorflow.keras")
BEAM = ("apache_beam",)
KERAS_FREE_TOOLS = ("shardflow.tools.verify", "shardflow.tools.diff", "shardflow.tools.inspect")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    """`shardflow.core.schema` -> "core", `shardflow.cli` -> "cli", `shardflow` -> "shardflow"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@functools.cache
def imports(module: str) -> frozenset[str]:
    """Every module that `module`'s import statements name, anywhere in it."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return frozenset(names)


def loaded_with(module: str) -> set[str]:
    """The package's modules that importing `module` runs: what it imports, what those import, ..., and the
    __init__ of every package above each of them."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for name in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            if name in MODULES and name not in seen:
                seen.add(name)
                todo.extend(imported for imported in imports(name) if imported in MODULES)
    return seen


def uses_keras(module: str) -> list[str]:
    """How `module` itself reaches Keras: an import of it, or TensorFlow's lazily loaded `tf.keras`."""
    found = [name for name in imports(module) if name.startswith(KERAS)]
    return found + [
        f"line {node.lineno}: .keras"
        for node in ast.walk(ast.parse(MODULES[module].read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "keras"
    ]


def upward_imports() -> list[str]:
    wrong = []
    for module in sorted(MODULES):
        allowed = {layer(module), "shardflow"} | MAY_IMPORT[layer(module)]
        wrong += [
            f"{module} imports {name}"
            for name in sorted(imports(module))
            if name in MODULES and layer(name) not in allowed
        ]
    return wrong


def keras_in_the_tools() -> list[str]:
    return [
        f"importing {tool} runs {module}, which uses Keras ({', '.join(uses_keras(module))})"
        for tool in KERAS_FREE_TOOLS
        for module in sorted(loaded_with(tool))
        if uses_keras(module)
    ]


def test_imports_run_downward_only():
    assert not upward_imports(), "\n".join(upward_imports())


def test_every_module_belongs_to_a_layer():
    """A new subpackage, or a module at the package root, is given its place in MAY_IMPORT first."""
    assert {layer(module) for module in MODULES} <= set(MAY_IMPORT), sorted(MODULES)
    assert not [name for name in imports("shardflow") if name.startswith("shardflow")]


def test_the_core_imports_neither_keras_nor_beam():
    for module in (m for m in MODULES if layer(m) == "core"):
        assert not uses_keras(module), f"{module}: {uses_keras(module)}"
        assert not [name for name in imports(module) if name.startswith(BEAM)], module


def test_verify_diff_and_inspect_import_nothing_that_uses_keras():
    assert not keras_in_the_tools(), "\n".join(keras_in_the_tools())


def test_the_checks_find_a_planted_import(tmp_path, monkeypatch):
    """Not vacuous: a lazy import of the pipeline inside a core function is an upward import, and it takes Keras
    into verify (pipeline/__init__ imports the Augment layer)."""
    module = "shardflow.core.files"
    planted = tmp_path / "files.py"
    planted.write_text(MODULES[module].read_text() + "\n\ndef planted():\n    from shardflow.pipeline import load\n")
    monkeypatch.setitem(MODULES, module, planted)
    imports.cache_clear()
    try:
        assert f"{module} imports shardflow.pipeline" in upward_imports()
        assert (
            "importing shardflow.tools.verify runs shardflow.pipeline.augment, which uses Keras (keras)"
            in keras_in_the_tools()
        )
    finally:
        imports.cache_clear()


NO_KERAS_SCRIPT = """
    import importlib.abc, sys

    class Blocked(ImportError, ValueError):
        '''ImportError for an import statement; ValueError, which TensorFlow's search for Keras's folder catches.'''

    class NoKeras(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras", "tf_keras"):
                raise Blocked(f"{{name}} is blocked: verify, diff and inspect must not need Keras")

    sys.meta_path.insert(0, NoKeras())
    import tensorflow  # (it imports Keras's optimizers when it can; it does without)
    from shardflow.cli import main
    from shardflow.core import metadata
    from shardflow.tools.diff import diff
    from shardflow.tools.inspect import inspect_json, inspect_text
    from shardflow.tools.verify import verify

    assert verify({data!r}).ok
    assert diff({data!r}, {data!r}).identical
    assert inspect_text(metadata.read({data!r}), []) and inspect_json(metadata.read({data!r}))
    for command in (["verify", {data!r}], ["diff", {data!r}, {data!r}], ["inspect", {data!r}]):
        assert main(command) == 0, command
    assert not [m for m in sys.modules if m.split(".")[0] in ("keras", "tf_keras")]
    print("verified, diffed and inspected without Keras")
"""


def test_verify_diff_and_inspect_run_without_keras(tiny_pets):
    """In a fresh interpreter where importing Keras fails: the tools' functions and their commands."""
    script = textwrap.dedent(NO_KERAS_SCRIPT).format(data=str(tiny_pets))
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "without Keras" in process.stdout
