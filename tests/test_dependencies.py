"""Dependencies run one way and every default has one home: reading a dataset needs no Apache Beam, the read
side never imports the conversion job, the CLI's defaults are the Python API's, importing shardflow changes no
global state, DALI is imported only for `backend="dali"`."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator

import pytest

from shardflow.beam_jobs.convert import ConvertOptions
from shardflow.beam_jobs.splits import parse_splits
from shardflow.cli import _parser
from shardflow.trainers.options import TrainOptions

PACKAGE = pathlib.Path(__file__).parent.parent / "shardflow"
READ_SIDE = ["core", "pipeline", "trainers", "tools"]


def imported(nodes: Iterable[ast.AST]) -> Iterator[str]:
    """The modules that the import statements among `nodes` name."""
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or ""


def test_the_read_side_never_imports_the_conversion_job():
    for part in READ_SIDE:
        for path in [PACKAGE / part] if part.endswith(".py") else (PACKAGE / part).glob("*.py"):
            for name in imported(ast.walk(ast.parse(path.read_text()))):
                assert not name.startswith(("apache_beam", "shardflow.beam_jobs")), f"{path}: imports {name}"


def test_nvidia_dali_is_imported_only_when_asked_for():
    """No module imports DALI at its top level: shardflow imports, and `load` runs, without DALI installed."""
    for path in PACKAGE.rglob("*.py"):
        for name in imported(ast.parse(path.read_text()).body):
            assert not name.startswith("nvidia"), f"{path}: imports {name}"


def python(script: str) -> subprocess.Popen:
    """A fresh interpreter running `script`: its output is read by `communicate`."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def fresh_interpreters(kaggle_dir, tiny_pets, tmp_path_factory):
    """Both fresh-interpreter checks below, started together: each is mostly a single-threaded import of TensorFlow,
    so on a machine with two cores the second adds little time. Each test waits for its own."""
    run = tmp_path_factory.mktemp("without_beam") / "run"
    processes = {
        "without_beam": python(without_beam_script(kaggle_dir, tiny_pets, run)),
        "global_state": python(GLOBAL_STATE_SCRIPT),
    }
    yield processes
    for process in processes.values():  # one a test gave up on (timeout), or whose test was not selected
        process.kill()
        process.communicate()


def without_beam_script(kaggle_dir, data, run) -> str:
    return f"""
        import importlib.abc, sys

        class NoBeam(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "apache_beam" or name.startswith("apache_beam."):
                    raise ImportError(f"{{name}} is blocked: reading must not need Beam")

        sys.meta_path.insert(0, NoBeam())
        import shardflow.pipeline
        from shardflow.cli import main
        from shardflow.pipeline import load
        from shardflow.trainers.predict import predict
        from shardflow.trainers.train import TrainOptions, train

        batches = sum(len(labels) for _, labels in load({str(data)!r}, "train", batch_size=8, image_size=32))
        assert main(["verify", {str(data)!r}]) == 0
        assert main(["inspect", {str(data)!r}]) == 0
        train({str(data)!r}, {str(run)!r}, TrainOptions(epochs=1, steps_per_epoch=1, batch_size=4, image_size=32,
                                                       verbose=0))
        predictions = predict({str(run)!r}, [{str(kaggle_dir / "cat.0.jpg")!r}])
        assert predictions[0].problem is None
        assert not any(m.startswith("apache_beam") for m in sys.modules)
        print("read", batches, "records without Beam")
    """


@pytest.mark.slow
def test_reading_training_and_predicting_work_without_beam(fresh_interpreters):
    """The read side in a fresh interpreter where importing Apache Beam fails: load, verify, inspect, train, predict."""
    process = fresh_interpreters["without_beam"]
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "without Beam" in stdout


GLOBAL_STATE_SCRIPT = """
        import logging, os, warnings
        import apache_beam.io.filesystems, apache_beam.runners.portability.fn_api_runner  # their own changes
        import keras, tensorflow, tensorflow_datasets
        before = (list(logging.getLogger().filters), list(logging.getLogger().handlers), dict(os.environ),
                  list(warnings.filters))
        import shardflow, shardflow.pipeline, shardflow.trainers.train, shardflow.trainers.predict
        import shardflow.tools.verify
        import shardflow.beam_jobs.convert
        after = (list(logging.getLogger().filters), list(logging.getLogger().handlers), dict(os.environ),
                 list(warnings.filters))
        print("same" if before == after else "changed: " + str([b for b, a in zip(before, after) if b != a]))
    """


@pytest.mark.slow  # a fresh interpreter importing TensorFlow, Keras and Beam (the other one runs beside it)
def test_importing_shardflow_changes_no_global_state(fresh_interpreters):
    """Beyond what TensorFlow, Keras and Beam change when imported: logging, the environment, warnings filters."""
    process = fresh_interpreters["global_state"]
    stdout, stderr = process.communicate(timeout=120)
    assert stdout.strip() == "same", stdout + stderr[-2000:]


def test_the_cli_defaults_are_the_api_defaults():
    train = vars(_parser().parse_args(["train", "data", "--out", "run"]))
    for field in dataclasses.fields(TrainOptions):
        if field.name in train:
            assert train[field.name] == getattr(TrainOptions(), field.name), field.name
    assert TrainOptions().weights == "imagenet"  # a frozen random base is never a silent default
    convert_args = vars(_parser().parse_args(["convert", "src", "out"]))
    defaults = ConvertOptions()
    for field in dataclasses.fields(ConvertOptions):
        if field.name == "splits":
            assert parse_splits(convert_args["splits"]) == defaults.splits
        elif field.name in convert_args and field.name != "class_names":
            assert convert_args[field.name] == getattr(defaults, field.name), field.name
