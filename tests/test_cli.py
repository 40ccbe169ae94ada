"""The command line says the library's parameters as its flags, shows warnings once as "warning: ..." lines, and
gives every option of every subcommand a help text that shows its default once."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

import shardflow
from shardflow import cli
from shardflow.cli import main


def option_helps(text: str) -> dict[str, str]:
    """{invocation: help} for each option of an argparse --help text."""
    helps: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("  -"):
            current, _, help_text = line.strip().partition("  ")
            helps[current] = help_text.strip()
        elif current and line.startswith(" " * 4) and line.strip():
            helps[current] = f"{helps[current]} {line.strip()}".strip()
        else:
            current = None
    return helps


def help_of(capsys, *command: str) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return capsys.readouterr().out


def subcommands(capsys) -> list[str]:
    usage = help_of(capsys).split("{", 1)[1].split("}", 1)[0]
    return usage.split(",")


def test_every_option_of_every_subcommand_has_help_that_shows_its_default_once(capsys):
    names = subcommands(capsys)
    assert {"convert", "train", "inspect", "verify", "predict"} <= set(names)
    for name in names:
        helps = option_helps(help_of(capsys, name))
        assert len(helps) > 1, name  # --help and the command's own
        for option, text in helps.items():
            assert text, f"shardflow {name} {option} has no help text"
            assert text.lower().count("default") <= 1, f"shardflow {name} {option}: {text}"


def test_every_action_of_every_subparser_has_help_and_says_default_at_most_once():
    """The same, from argparse's own actions (positionals and argument groups included), as each --help renders
    them: help text, at most one "default" in it, and every option with a default says it."""
    parser = cli._parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers.choices) == len(cli._commands())
    for name, sub in subparsers.choices.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.dest == "help":
                continue
            where = f"shardflow {name} {'/'.join(action.option_strings) or action.dest}"
            text = formatter._expand_help(action) if action.help else ""
            assert text.strip(), f"{where} has no help text"
            assert text.lower().count("default") <= 1, f"{where}: {text}"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in text.lower(), f"{where} does not show its default {action.default!r}: {text}"


def test_version_is_the_package_version_and_convert_version_the_dataset_version(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    shown = subprocess.run(
        [sys.executable, "-m", "shardflow.cli", "--version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"shardflow {shardflow.__version__}"
    args = cli._parser().parse_args(["convert", str(tmp_path), str(tmp_path / "out"), "--version", "2.1.0"])
    assert args.version == "2.1.0"


def test_train_help_shows_the_api_defaults(capsys):
    helps = option_helps(help_of(capsys, "train"))
    assert helps["--epochs EPOCHS"].endswith("(default: 30)")
    assert "(default: 32; 64 for features)" in helps["--batch-size BATCH_SIZE"]
    assert "(default: 0.1)" in helps["--validation-split VALIDATION_SPLIT"]


def test_train_typos_get_a_suggestion(tiny_pets, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["train", str(tiny_pets), "--out", str(tmp_path / "run"), "--batchsize", "8"])
    assert exit_status.value.code == 2
    error = capsys.readouterr().err
    assert "unrecognized arguments: --batchsize 8; did you mean --batch-size?" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "command, expected",
    [
        (["convert", "{data}", "{out}", "--quality", "500"], "error: --quality must be between 1 and 100, got 500"),
        (["convert", "{data}", "{out}", "--size", "32x", "--max-side", "64"], "error: --size must be S or HxW"),
        (
            ["convert", "{data}", "{out}", "--split-counts-allow-fewer"],
            "error: --split-counts-allow-fewer goes with --split-counts",
        ),
        (
            ["train", "{data}", "--out", "{out}", "--validation-split", "1"],
            "error: --validation-split must be at least 0 and below 1, got 1",
        ),
        (["train", "{data}", "--out", "{out}", "--init-from", "{data}"], "error: --init-from is for --model fine_tune"),
        (
            ["preview", "{data}", "--out", "{out}.png", "--variants", "-1"],
            "error: --images must be >= 1, --variants >= 0 and --image-size >= 8",
        ),
    ],
)
def test_errors_name_the_flags(tiny_pets, tmp_path, capsys, command, expected):
    assert main([part.format(data=tiny_pets, out=tmp_path / "out") for part in command]) == 2
    error = capsys.readouterr().err
    assert expected in error and "`" not in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "out").exists()


def test_warnings_and_the_start_line_name_the_flags_once(pets_in_shards, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                str(pets_in_shards),
                "--out",
                str(tmp_path / "run"),
                "--validation-split",
                "0",
                "--epochs",
                "1",
                "--steps-per-epoch",
                "1",
                "--batch-size",
                "4",
                "--image-size",
                "24",
            ]
        )
        == 0
    )
    error = capsys.readouterr().err.splitlines()
    assert [line for line in error if line.startswith("warning:")] == [
        "warning: --validation-split 0: checkpoints and early stopping follow the training loss"
    ]
    assert [line for line in error if line.startswith("training small_convnet on")][0].count("(--image-size)") == 1
