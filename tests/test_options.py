"""The option classes of the Python API check themselves and name the parameter at fault as Python spells it,
never as a command-line flag; the library warns and logs instead of printing."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from shardflow.beam_jobs.convert import convert
from shardflow.beam_jobs.options import ConvertOptions
from shardflow.core.images import ImageOptions
from shardflow.core.messages import ShardflowWarning, did_you_mean, in_flags
from shardflow.pipeline import ReadConfig, load, read
from shardflow.trainers.options import TrainOptions
from shardflow.trainers.train import train


def refused(make, **values) -> str:
    """The message of the ValueError `make(**values)` raises."""
    with pytest.raises(ValueError) as error:
        make(**values)
    return str(error.value)


@pytest.mark.parametrize(
    "values, parameter",
    [
        ({"quality": 500}, "quality"),
        ({"max_side": 0}, "max_side"),
        ({"shard_size_mb": 0}, "shard_size_mb"),
        ({"workers": -1}, "workers"),
        ({"layout": "csv"}, "layout"),
        ({"channels": 2}, "channels"),
        ({"image_format": "gif"}, "image_format"),
        ({"size": 150, "max_side": 100}, "max_side"),
        ({"size": "150x"}, "size"),
        ({"crop_to_aspect_ratio": True}, "crop_to_aspect_ratio"),
        ({"split_counts_allow_fewer": True}, "split_counts_allow_fewer"),
        ({"splits": {"train": 0.5, "test": 0.2}}, "splits"),
        ({"splits": {"train": 0.9, "holdout": 0.1}}, "splits"),
        ({"split_counts": {"train": -1}}, "split_counts"),
        ({"dedupe": "fuzzy"}, "dedupe"),
        ({"validation_from_train": 1.5}, "validation_from_train"),
        ({"zip_encoding": "base64"}, "zip_encoding"),
    ],
)
def test_convert_options_check_themselves_from_python(values, parameter):
    message = refused(ConvertOptions, **values)
    assert f"`{parameter}`" in message and "--" not in message, message


def test_image_options_name_their_parameters():
    assert "`size` and `max_side` exclude each other" in refused(ImageOptions, size=150, max_side=200)
    assert "`quality` must be between 1 and 100, got 0" in refused(ImageOptions, quality=0)


@pytest.mark.parametrize(
    "values, parameter",
    [
        ({"model": "resnet9000"}, "model"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"image_size": 3}, "image_size"),
        ({"augment_on": "gpu"}, "augment_on"),
        ({"base": "vgg"}, "base"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"init_from": "runs/transfer"}, "init_from"),  # only for fine_tune
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"resume": True, "overwrite": True}, "overwrite"),  # continue or replace: not both
    ],
)
def test_train_options_check_themselves_from_python(values, parameter):
    message = refused(TrainOptions, **values)
    assert f"`{parameter}`" in message and "--" not in message, message


@pytest.mark.parametrize(
    "values, parameter",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"image_size": (16, -1)}, "image_size"),
        ({"augment": '{"rotation": 40}'}, "rotation"),
        ({"shuffle_buffer": 0}, "shuffle_buffer"),
        ({"take": -1}, "take"),
        ({"backend": "torch"}, "backend"),
        ({"backend": "dali", "cache": True}, "cache"),
        ({"skip": -1}, "skip"),
        ({"backend": "dali", "skip": 2}, "skip"),
    ],
)
def test_read_config_checks_itself(values, parameter):
    message = refused(ReadConfig, **{"batch_size": 8, "image_size": 32, **values})
    assert parameter in message and "--" not in message, message


def test_read_config_is_frozen_and_decides_the_order_per_split():
    config = ReadConfig(batch_size=8, image_size=32, augment="seed004")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 16
    assert config.for_split("train").shuffle and not config.for_split("test").shuffle
    assert not config.for_split("train").deterministic and config.for_split("test").deterministic
    assert ReadConfig(batch_size=8, image_size=32, seed=0).for_split("train").deterministic


def test_load_is_read_with_a_config(pets_in_shards):
    by_keywords = load(str(pets_in_shards), "train", batch_size=8, image_size=24, seed=1, augment="seed004")
    by_config = read(str(pets_in_shards), "train", ReadConfig(batch_size=8, image_size=24, seed=1, augment="seed004"))
    assert by_keywords.cardinality() == by_config.cardinality()
    for (a_images, a_labels), (b_images, b_labels) in zip(by_keywords, by_config, strict=True):
        np.testing.assert_array_equal(a_images.numpy(), b_images.numpy())
        np.testing.assert_array_equal(a_labels.numpy(), b_labels.numpy())


def test_messages_become_flags_only_for_known_parameters():
    flags = {"max_side": "--max-side", "size": "--size"}
    assert (
        in_flags("`size` and `max_side` exclude each other; see `shardflow verify DATA`", flags)
        == "--size and --max-side exclude each other; see `shardflow verify DATA`"
    )
    assert did_you_mean(["--batchsize"], ["--batch-size", "--epochs"]) == "; did you mean --batch-size?"
    assert did_you_mean(["--colour"], ["--batch-size"]) == ""


def test_training_warns_and_logs_instead_of_printing(pets_in_shards, tmp_path, capsys, caplog):
    options = TrainOptions(validation_split=0, epochs=1, steps_per_epoch=1, batch_size=4, image_size=24)
    with (
        caplog.at_level(logging.INFO, logger="shardflow"),
        pytest.warns(ShardflowWarning, match="`validation_split` 0: checkpoints and early stopping follow"),
    ):
        train(str(pets_in_shards), str(tmp_path / "run"), options)
    assert "training small_convnet on" in caplog.text and "at 24x24 (`image_size`)" in caplog.text
    printed = capsys.readouterr().err
    assert "validation_split" not in printed and "training small_convnet" not in printed


def test_conversion_logs_instead_of_printing(kaggle_dir, tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="shardflow"):
        convert(str(kaggle_dir), str(tmp_path / "out"), ConvertOptions(workers=1))
    assert "60 inputs, layout kaggle" in caplog.text and "Beam counters: " in caplog.text
    printed = capsys.readouterr().err
    assert "Beam counters" not in printed and "layout kaggle" not in printed
