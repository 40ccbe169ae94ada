"""What a run validates on: never the test split. A dataset without a validation split gets one held out of train
(by the trainer, or once by `convert --validation-from-train`); split options that cannot apply are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from shardflow.beam_jobs.splits import split_for
from shardflow.cli import main
from shardflow.core import metadata, schema
from shardflow.core.shards import stored_records
from shardflow.pipeline import load
from shardflow.pipeline.holdout import Holdout
from shardflow.testing.sample_digits import handwritten_digits
from tests.conftest import convert_cli, write_idx

QUICK = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8"]


@pytest.fixture(scope="module")
def idx_source(tmp_path_factory):
    """MNIST-like IDX files: 300 training digits and 60 test digits (train and test splits, no validation)."""
    folder = tmp_path_factory.mktemp("digits")
    digits, labels = handwritten_digits(360, seed=3)
    write_idx(folder, "train", digits[:300], labels[:300], gz=True)
    write_idx(folder, "t10k", digits[300:], labels[300:], gz=True)
    return folder


@pytest.fixture(scope="module")
def digits_data(idx_source, tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_data") / "data"
    assert convert_cli(idx_source, out, "--workers", "1") == 0
    return out


def _filenames(data, split: str, holdout: Holdout) -> list[bytes]:
    spec = {schema.FILENAME: tf.io.FixedLenFeature([], tf.string)}
    records = stored_records(metadata.read(str(data)), split).filter(holdout.keeps)
    return [tf.io.parse_single_example(r, spec)[schema.FILENAME].numpy() for r in records]


def test_the_held_out_part_of_train_is_fixed_by_path_and_disjoint_from_the_rest(digits_data):
    held_out, rest = Holdout(0.1), Holdout(0.1).rest()
    validation, training = _filenames(digits_data, "train", held_out), _filenames(digits_data, "train", rest)
    assert not set(validation) & set(training) and len(validation) + len(training) == 300
    assert 15 <= len(validation) <= 45  # ~10% of 300
    assert _filenames(digits_data, "train", held_out) == validation  # the same part on every read
    batches = [
        load(str(digits_data), "train", batch_size=64, image_size=None, holdout=h, seed=s)
        for h, s in ((held_out, 0), (rest, 1))
    ]
    assert [sum(len(labels) for _, labels in b) for b in batches] == [len(validation), len(training)]


@pytest.mark.slow
def test_a_run_without_a_validation_split_validates_on_train_held_out_never_on_test(digits_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(digits_data), "--model", "fashion_cnn", "--out", str(run), *QUICK, "--seed", "0"]) == 0
    started = capsys.readouterr().err
    assert (
        "validating on 10% of train, held out by a stable hash of each image's path, the test split only "
        "reported" in started
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["split"] == "train" and metrics["validation"]["held_out_fraction"] == 0.1
    assert metrics["evaluated_on"] == "test" and "val_loss" in json.loads((run / "history.json").read_text())
    assert json.loads((run / "run.json").read_text())["validation"] == metrics["validation"]

    assert (
        main(
            [
                "train",
                str(digits_data),
                "--model",
                "fashion_cnn",
                "--out",
                str(tmp_path / "none"),
                *QUICK,
                "--validation-split",
                "0",
            ]
        )
        == 0
    )
    assert "validating on nothing" in capsys.readouterr().err
    assert json.loads((tmp_path / "none" / "metrics.json").read_text())["validation"] is None


@pytest.mark.slow
def test_a_square_stored_size_is_the_default_image_size(digits_data, tmp_path, capsys):
    assert main(["train", str(digits_data), "--model", "small_convnet", "--out", str(tmp_path / "run"), *QUICK]) == 0
    assert "at 28x28 (the dataset's stored size)" in capsys.readouterr().err
    assert keras.models.load_model(tmp_path / "run" / "model.keras").input.shape[1:] == (28, 28, 1)


@pytest.mark.slow
def test_convert_holds_out_validation_from_a_predefined_train_split(idx_source, tmp_path, capsys):
    out = tmp_path / "data"
    assert convert_cli(idx_source, out, "--validation-from-train", "0.2", "--workers", "1") == 0
    splits = metadata.read(str(out)).splits
    assert set(splits) == {"train", "validation", "test"} and splits["test"].num_examples == 60
    assert splits["train"].num_examples + splits["validation"].num_examples == 300
    expected = sum(
        split_for(f"train-images-idx3-ubyte.gz#{i:05d}", {"validation": 0.2, "train": 0.8}) == "validation"
        for i in range(300)
    )
    assert splits["validation"].num_examples == expected
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                str(out),
                "--model",
                "fashion_cnn",
                "--out",
                str(tmp_path / "run"),
                *QUICK,
                "--validation-split",
                "0.3",
            ]
        )
        == 2
    )
    assert "--validation-split does not apply" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--splits", "train=0.5,test=0.5"], "--splits does not apply: the source has its own splits (test, train)"),
        (["--split-counts", "train=10"], "--split-counts does not apply"),
    ],
)
def test_split_options_that_cannot_apply_to_a_source_with_its_own_splits_are_refused(
    idx_source, tmp_path, capsys, flags, message
):
    assert convert_cli(idx_source, tmp_path / "out", *flags) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_validation_from_train_is_refused_where_there_is_no_predefined_train_split(kaggle_dir, tmp_path, capsys):
    assert convert_cli(kaggle_dir, tmp_path / "out", "--validation-from-train", "0.1") == 2
    assert "--validation-from-train applies to a source with its own train split" in capsys.readouterr().err


def test_split_names_are_the_ones_the_trainer_looks_for(kaggle_dir, tmp_path, capsys):
    assert convert_cli(kaggle_dir, tmp_path / "val", "--splits", "train=0.8,val=0.2", "--workers", "1") == 0
    assert set(metadata.read(str(tmp_path / "val")).splits) == {"train", "validation"}
    assert convert_cli(kaggle_dir, tmp_path / "holdout", "--splits", "train=0.8,holdout=0.2") == 2
    error = capsys.readouterr().err
    assert "split name(s) 'holdout'" in error and "--other-split-names" in error
    assert (
        convert_cli(
            kaggle_dir,
            tmp_path / "holdout",
            "--splits",
            "train=0.8,holdout=0.2",
            "--other-split-names",
            "--workers",
            "1",
        )
        == 0
    )


@pytest.mark.slow
def test_imagenet_weights_that_cannot_be_downloaded_are_one_line_and_leave_no_run_folder(tiny_pets, tmp_path):
    """A network that refuses connections (a proxy on a closed local port), an empty Keras cache."""
    env = os.environ | {
        "KERAS_HOME": str(tmp_path / "keras"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardflow.cli",
            "train",
            str(tiny_pets),
            "--model",
            "transfer",
            "--image-size",
            "32",
            "--out",
            str(run),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "could not download the vgg16 ImageNet weights" in errors[0]
    assert "--weights none" in errors[0] and not run.exists()
