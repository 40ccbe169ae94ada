"""User mistakes get one line saying what is wrong and what to do: exit status 2, no traceback."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys

import pytest

from shardflow.beam_jobs.options import ConvertOptions
from shardflow.cli import main
from tests.conftest import encode, noise_image


@pytest.fixture
def tree(tmp_path):
    def make(*names):
        for name in names:
            path = tmp_path / "src" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode(noise_image(8, 8)))
        return tmp_path / "src"

    return make


@pytest.mark.parametrize(
    "files, extra, expected",
    [
        (None, [], "does not exist"),
        ((), [], "empty"),
        (("cat.0.jpg", "dog.0.jpg"), ["--layout", "csv"], "invalid choice"),
        (("cat/0.jpg", "dog/0.jpg", "stray.jpg"), [], "mixed"),
        (("cat.0.jpg", "cat.1.jpg"), [], "only one class"),
        (("1.jpg", "2.jpg"), [], "--unlabeled"),
        (("cat.0.jpg", "dog.0.jpg"), ["--splits", "train=0.7,test=0.2"], "add up to 0.9"),
        (("cat.0.jpg", "dog.0.jpg"), ["--splits", "train"], "NAME=VALUE"),
        (("cat.0.jpg", "dog.0.jpg"), ["--max-side", "0"], "--max-side"),
        (("cat.0.jpg", "dog.0.jpg"), ["--quality", "101"], "--quality"),
    ],
)
def test_convert_mistakes(tree, tmp_path, capsys, files, extra, expected):
    src = tree(*files) if files is not None else tmp_path / "missing"
    if files == ():
        src.mkdir()
    with pytest.raises(SystemExit) if "invalid choice" in expected else contextlib.nullcontext():  # argparse
        assert main(["convert", str(src), str(tmp_path / "out"), *extra]) == 2
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("extra", [[], ["--dedupe", "near"]])
def test_a_source_whose_every_file_is_rejected_ends_with_each_reason(tmp_path, capsys, extra):
    for name in ("cat/0.jpg", "cat/1.jpg", "dog/0.jpg"):  # no records: no duplicate keys, parts or groups either
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_bytes(b"not a JPEG")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out"), "--workers", "2", *extra]) == 2
    error = capsys.readouterr().err
    assert "error: no input became a record (3 rejected; see the reasons below)" in error
    assert "dog/0.jpg: not an image" in error and "Traceback" not in error


def test_out_inside_src(tree, capsys):
    src = tree("cat.0.jpg", "dog.0.jpg")
    assert main(["convert", str(src), str(src / "out")]) == 2
    assert "inside SRC" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["train", "{dir}", "--out", "{dir}/run"],
        ["inspect", "{dir}"],
        ["verify", "{dir}"],
        ["preview", "{dir}", "--out", "{dir}/grid.png"],
    ],
)
def test_not_a_dataset(tmp_path, capsys, command):
    assert main([part.format(dir=tmp_path) for part in command]) == 2
    error = capsys.readouterr().err
    assert "not a shardflow dataset" in error and len(error.splitlines()) == 1


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--image-size", "3"], "--image-size"),
        (["--epochs", "0"], "--epochs"),
        (["--augment", '{"rotation": 40}'], "rotation"),
    ],
)
def test_training_mistakes(tiny_pets, tmp_path, capsys, flags, expected):
    assert main(["train", str(tiny_pets), "--out", str(tmp_path / "run"), *flags]) == 2
    error = capsys.readouterr().err
    assert expected in error and len(error.splitlines()) == 1


@pytest.mark.slow
def test_the_error_is_all_a_command_prints(tmp_path):
    """In a fresh process, TensorFlow's C++ start-up lines (which ignore TF_CPP_MIN_LOG_LEVEL since TF 2.19, and
    on a machine without a GPU include an error line about cuInit) stay off the terminal: the user's one line is
    all there is."""
    result = subprocess.run(
        [sys.executable, "-m", "shardflow.cli", "verify", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "shardflow verify: error:" in result.stderr


def help_entries(text: str) -> dict[str, str]:
    """argparse's help text -> {invocation: its help}, for every option and positional argument listed (a group's
    description, the lines between its title and a blank line that more entries follow, is none)."""
    entries: dict[str, str] = {}
    current = None
    lines = text.splitlines() + [""]
    description = False
    for number, line in enumerate(lines[:-1]):
        if line.endswith(":") and not line.startswith(" "):  # a group's title: is a description next?
            end = next(i for i in range(number + 1, len(lines)) if not lines[i].strip())
            description = end < len(lines) - 1 and lines[end + 1].startswith("  ")
            current = None
            continue
        if not line.strip():
            description = current = None
            continue
        entry = re.match(r"^  (\S.*?)(?:\s{2,}(\S.*))?$", line)
        if entry and not description:
            current = entry.group(1)
            entries[current] = entry.group(2) or ""
        elif current and line.startswith("   ") and line.strip():
            entries[current] = (entries[current] + " " + line.strip()).strip()
        else:
            current = None
    return entries


def test_every_option_of_every_command_has_help_and_shows_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    commands = re.search(r"\{([\w,-]+)\}", capsys.readouterr().out).group(1).split(",")
    assert {"convert", "train", "evaluate", "predict", "inspect", "verify"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        entries = help_entries(capsys.readouterr().out)
        assert len(entries) > 1, command
        missing = [invocation for invocation, text in entries.items() if not text]
        assert not missing, f"shardflow {command}: no help for {missing}"
        if command == "convert":  # the defaults shown are the Python API's own
            options = ConvertOptions()
            assert f"(default: {options.quality})" in entries["--quality QUALITY"]
            assert f"(default: {options.shard_size_mb})" in entries["--shard-size-mb SHARD_SIZE_MB"]


def test_a_full_folder_that_is_no_dataset_is_refused_first_for_what_overwrite_cannot_do(tree, tmp_path, capsys):
    """OUT holds other files: the first message already says --overwrite will not replace it (and why), rather
    than suggesting --overwrite and then refusing it."""
    src = tree("cat/0.jpg", "dog/0.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert main(["convert", str(src), str(out), "--workers", "1", *extra]) == 2
        error = capsys.readouterr().err
        assert len(error.splitlines()) == 1, error
        assert "not a shardflow dataset" in error and "--overwrite will not replace it" in error, error
        assert "pass --overwrite" not in error, error
    assert os.listdir(out) == ["notes.txt"]
    (out / "notes.txt").unlink()
    (out / "dataset_info.json").write_text("{}")  # a dataset shardflow wrote: --overwrite is the way
    assert main(["convert", str(src), str(out), "--workers", "1"]) == 2
    error = capsys.readouterr().err
    assert "holds a shardflow dataset; pass --overwrite to replace it" in error and len(error.splitlines()) == 1


def test_a_full_folder_that_is_no_run_is_refused_first_for_what_overwrite_cannot_do(tiny_pets, tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert main(["train", str(tiny_pets), "--out", str(out), "--epochs", "1", *extra]) == 2
        error = capsys.readouterr().err
        assert "not a training run (no model.keras); --overwrite will not replace it" in error, error
        assert "pass --overwrite" not in error and len(error.splitlines()) == 1, error
    assert os.listdir(out) == ["todo.txt"]
