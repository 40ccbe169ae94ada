"""Trainers: the tutorials' architectures, training runs and their outputs, evaluate and predict."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from shardflow.cli import main
from shardflow.testing.sample_data import write_sample_data
from shardflow.trainers import models
from shardflow.trainers.predict import evaluate
from shardflow.trainers.throughput import MIN_PROBE_STEPS, PROBE_STEPS, compute_seconds_per_step
from shardflow.trainers.train import TrainOptions, train
from tests.conftest import write_idx


@pytest.mark.parametrize(
    "name, shape, classes, params",
    [
        ("small_convnet", (150, 150, 3), 2, 9_494_561),
        ("book_convnet", (150, 150, 3), 2, 3_453_121),
        ("mnist_convnet", (28, 28, 1), 10, 93_322),
        ("fashion_cnn", (28, 28, 1), 10, 333_526),
    ],
)
def test_parameter_counts_match_the_tutorials(name, shape, classes, params):
    model = models.build(name, shape, classes)
    assert model.count_params() == params
    assert model.output_shape == ((None, 1) if classes == 2 else (None, classes))


def test_transfer_fine_tune_and_feature_models():
    transfer = models.build("transfer", (160, 160, 3), 5, base="mobilenet_v2", weights="none")
    trainable = sum(int(np.prod(w.shape)) for w in transfer.trainable_weights)
    assert trainable == 1280 * 5 + 5  # only the new Dense head trains
    fine = models.build("fine_tune", (150, 150, 3), 2, base="vgg16", weights="none", unfreeze=3)
    assert sum(int(np.prod(w.shape)) for w in fine.trainable_weights) == 3 * (3 * 3 * 512 * 512 + 512) + 513
    extractor = models.feature_extractor("vgg16", (150, 150, 3), None)
    assert extractor.output_shape == (None, 4, 4, 512)
    assert models.features_head((4, 4, 512), 2).count_params() == 4 * 4 * 512 * 256 + 256 + 257


def test_local_weight_files_load(tmp_path):
    source = models.base_model("mobilenet_v2", (32, 32, 3), None)
    source.save_weights(tmp_path / "base.weights.h5")
    loaded = models.base_model("mobilenet_v2", (32, 32, 3), str(tmp_path / "base.weights.h5"))
    np.testing.assert_array_equal(loaded.weights[0].numpy(), source.weights[0].numpy())


@pytest.fixture(scope="module")
def small_pets(sample_photos, tmp_path_factory):
    """The 800 sample photos, converted at --max-side 96 (quick to decode): enough to learn from. (Runs that only
    train a few steps, and commands refused before training, take conftest's 60-image `tiny_pets`.)"""
    out = tmp_path_factory.mktemp("pets") / "data"
    assert main(["convert", str(sample_photos), str(out), "--max-side", "96", "--workers", "1"]) == 0
    return out


@pytest.mark.slow
def test_small_convnet_learns_and_writes_its_run(small_pets, tmp_path):
    run = tmp_path / "run"  # at 32 px as accurate as at 48 (seeds 1, 2, 3: 0.86, 0.77, 0.90) in 2/3 of the time
    metrics = train(
        str(small_pets),
        str(run),
        TrainOptions(model="small_convnet", epochs=8, image_size=32, seed=1, patience=4, verbose=0),
    )
    assert metrics["test_accuracy"] > 0.75, metrics
    for name in ("model.keras", "run.json", "history.json", "history.png", "metrics.json"):
        assert (run / name).exists(), name
    assert any((run / "logs").rglob("events.out.tfevents.*"))
    history = json.loads((run / "history.json").read_text())
    assert {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(history)
    assert len(metrics["images_per_second"]) == metrics["epochs_run"] and min(metrics["images_per_second"]) > 0
    assert all(0 <= f <= 1 for f in metrics["input_wait_fraction"])
    # the model alone (no input pipeline competing for the 2 cores) is not slower than the model fed by it (when
    # fit's own start and end were timed as compute, it came out at about half)
    assert metrics["compute_only_images_per_second"] > 0.7 * np.median(metrics["images_per_second"]), metrics
    assert metrics["device"] == ("GPU" if tf.config.list_physical_devices("GPU") else "CPU")
    assert Image.open(run / "history.png").size[0] > 400


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epoch(tiny_pets, tmp_path):
    metrics = train(
        str(tiny_pets),
        str(tmp_path / "run"),
        TrainOptions(model="small_convnet", epochs=8, image_size=32, lr=0.5, patience=1, seed=2, verbose=0),
    )
    assert metrics["epochs_run"] < 8  # a learning rate this large diverges: stopped early
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    best = int(np.argmin(history["val_loss"]))
    assert metrics["best_epoch"] == best + 1 < metrics["epochs_run"]  # the last epoch was not the best
    reloaded = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert reloaded.input.dtype == "uint8"
    # the model kept is the best epoch's: evaluated again on validation, it scores what that epoch scored
    scores = evaluate(str(tmp_path / "run"), str(tiny_pets), "validation")
    assert scores["loss"] == pytest.approx(history["val_loss"][best], rel=1e-4)
    assert scores["loss"] != pytest.approx(history["val_loss"][-1], rel=1e-4)
    assert scores["accuracy"] == pytest.approx(history["val_accuracy"][best], abs=1e-6)


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """A run with mixed precision sets Keras' global policy; the next test starts from float32 whatever happened."""
    yield
    keras.mixed_precision.set_global_policy("float32")


def where_it_trains() -> str:
    """How the start line names the device: the test machine may have GPUs."""
    gpus = len(tf.config.list_physical_devices("GPU"))
    return f"{gpus} GPU(s)" if gpus else "the CPU (no GPU visible to TensorFlow)"


def initial_weights(model: str, options: dict) -> list[np.ndarray]:
    """The trainable weights `train` starts from with seed 0 (the same seed, the same layers built in the same
    order): the bare model's, or the features head's."""
    keras.utils.set_random_seed(0)
    size = (options["image_size"], options["image_size"], 3)
    if model == "features":
        base = models.feature_extractor(options["base"], size, options["weights"])
        built = models.features_head(tuple(base.output.shape[1:]), 2)
    else:
        built = models.build(model, size, 2)
    return [w.numpy() for w in built.trainable_weights]


def trained_part(saved: keras.Model) -> keras.Model:
    """The bare model inside a saved run's model (the features head for `features`)."""
    return [layer for layer in saved.layers if isinstance(layer, keras.Model)][-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, options",
    [  # transfer and fine_tune: test_fine_tune_continues_a_transfer_run
        ("book_convnet", {"image_size": 64, "augment": "seed004", "augment_on": "model"}),
        ("small_convnet", {"image_size": 32, "jit": True, "augment": "seed004"}),
        ("features", {"image_size": 32, "base": "vgg16", "weights": "none"}),
        ("small_convnet", {"image_size": 32, "mixed_precision": True}),
    ],
)
def test_every_model_trains_a_few_steps(tiny_pets, tmp_path, model, options):
    metrics = train(
        str(tiny_pets),
        str(tmp_path / "run"),
        TrainOptions(model=model, epochs=1, steps_per_epoch=3, batch_size=8, seed=0, verbose=0, **options),
    )
    assert 0 <= metrics["test_accuracy"] <= 1 and np.isfinite(metrics["test_loss"])
    if "augment" in options:  # in the model when asked; XLA (--jit) keeps it in the CPU pipeline
        assert metrics["augment_on"] == ("pipeline" if options.get("jit") else options.get("augment_on", "pipeline"))
    assert metrics["resize_on"] == "pipeline"  # images of varying sizes: the pipeline resizes (GPU or not)
    keras.mixed_precision.set_global_policy("float32")  # (what the saved model's layers say is what is checked)
    saved = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert saved.input.shape[1] == options["image_size"]
    trained = [w.numpy() for w in trained_part(saved).trainable_weights]
    start = initial_weights(model, options)
    assert [w.shape for w in trained] == [w.shape for w in start]
    assert any(not np.array_equal(a, b) for a, b in zip(trained, start)), "the weights never changed"
    # mixed precision where asked for: float16 computation inside, float32 variables and output
    policy = "mixed_float16" if options.get("mixed_precision") else "float32"
    conv = next(layer for layer in trained_part(saved).layers if layer.weights)
    assert conv.dtype_policy.name == policy and conv.compute_dtype == policy.replace("mixed_", "")
    assert conv.weights[0].dtype == "float32" and saved.output.dtype == "float32"


@pytest.mark.slow
def test_fine_tune_continues_a_transfer_run(tiny_pets, tmp_path, capsys):
    common = [
        "--image-size",
        "32",
        "--base",
        "mobilenet_v2",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "8",
    ]
    assert main(["train", str(tiny_pets), "--model", "transfer", "--out", str(tmp_path / "transfer"), *common]) == 0
    assert (
        "warning: --weights none: the mobilenet_v2 base starts from random weights and stays frozen"
        in capsys.readouterr().err
    )  # said before training starts
    transfer = keras.models.load_model(tmp_path / "transfer" / "model.keras")
    assert (
        main(
            [
                "train",
                str(tiny_pets),
                "--model",
                "fine_tune",
                "--init-from",
                str(tmp_path / "transfer"),
                "--unfreeze",
                "5",
                "--out",
                str(tmp_path / "fine"),
                *common,
            ]
        )
        == 0
    )
    fine = keras.models.load_model(tmp_path / "fine" / "model.keras")
    assert sum(int(np.prod(w.shape)) for w in fine.trainable_weights) > sum(
        int(np.prod(w.shape)) for w in transfer.trainable_weights
    )
    assert (
        main(
            [
                "train",
                str(tiny_pets),
                "--model",
                "small_convnet",
                "--init-from",
                str(tmp_path / "transfer"),
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "--init-from is for --model fine_tune" in capsys.readouterr().err


@pytest.mark.slow
def test_mnist_models_on_idx(tmp_path):
    (tmp_path / "mnist").mkdir()
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    digits = (rng.random((200, 28, 28)) * 40).astype(np.uint8)
    for i, label in enumerate(labels):  # a bright bar whose position is the class
        digits[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    write_idx(tmp_path / "mnist", "train", digits, labels, gz=True)
    write_idx(tmp_path / "mnist", "t10k", digits[:50], labels[:50], gz=True)
    assert main(["convert", str(tmp_path / "mnist"), str(tmp_path / "data"), "--workers", "1"]) == 0
    for model in ("mnist_convnet", "fashion_cnn"):  # one epoch: 0.8-1.0 with seeds 0, 1, 2 (two: 1.0)
        metrics = train(
            str(tmp_path / "data"),
            str(tmp_path / model),
            TrainOptions(model=model, epochs=1, batch_size=16, seed=0, verbose=0),
        )
        assert metrics["test_accuracy"] > 0.5, (model, metrics)


@pytest.mark.slow
def test_evaluate_and_predict(tiny_pets, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_pets), "--out", str(run), "--epochs", "2", "--image-size", "32", "--seed", "0"]) == 0
    printed = capsys.readouterr()
    assert "test accuracy" in printed.out
    assert f"training small_convnet on {where_it_trains()}" in printed.err  # says where, before the epochs
    assert main(["evaluate", str(run), str(tiny_pets), "--split", "validation"]) == 0
    assert "validation: accuracy" in capsys.readouterr().out
    test1 = tmp_path / "test1"
    write_sample_data(test1, n=4, seed=99)
    for i, path in enumerate(sorted(test1.iterdir())):
        path.rename(test1 / f"{i + 1}.jpg")
    assert main(["predict", str(run), str(test1), "--csv", str(tmp_path / "submission.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("this image is" in line and ("% cat" in line or "% dog" in line) for line in lines) == 4
    rows = list(csv.reader(open(tmp_path / "submission.csv")))
    assert rows[0] == ["id", "label"] and sorted(r[0] for r in rows[1:]) == ["1", "2", "3", "4"]
    assert all(0 <= float(r[1]) <= 1 for r in rows[1:])
    assert main(["predict", str(run), str(tiny_pets), "--split", "test"]) == 0
    assert (
        capsys.readouterr().out.count("this image is")
        == json.loads((tiny_pets / "shardflow.json").read_text())["splits"]["test"]["num_examples"]
    )


def test_user_mistakes(tiny_pets, tmp_path, capsys):
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "not a shardflow dataset" in capsys.readouterr().err
    assert main(["train", str(tiny_pets), "--out", str(tmp_path / "run"), "--image-size", "2"]) == 2
    assert "--image-size" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["train", str(tiny_pets), "--out", str(tmp_path / "run"), "--model", "resnet9000"])
    assert "invalid choice: 'resnet9000' (choose from 'small_convnet'" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing"), "x.jpg"]) == 2
    assert "not a finished training run" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_is_never_silently_replaced(tiny_pets, tmp_path, capsys):
    quick = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "4", "--image-size", "24"]
    run = tmp_path / "run"
    assert main(["train", str(tiny_pets), "--out", str(run), *quick]) == 0
    first = (run / "model.keras").stat().st_mtime_ns
    assert main(["train", str(tiny_pets), "--out", str(run), *quick]) == 2
    assert "holds a training run; pass --overwrite" in capsys.readouterr().err
    assert (run / "model.keras").stat().st_mtime_ns == first
    assert main(["train", str(tiny_pets), "--out", str(run), "--overwrite", *quick]) == 0
    assert len(list((run / "logs" / "train").glob("events.out.tfevents.*"))) == 1  # no logs mixed from run 1
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert main(["train", str(tiny_pets), "--out", str(tmp_path / "notes"), "--overwrite", *quick]) == 2
    assert "not a training run (no model.keras); --overwrite will not replace it" in capsys.readouterr().err


@pytest.mark.slow
def test_mistakes_that_train_but_not_as_meant_are_said(tiny_pets, kaggle_dir, tmp_path, capsys):
    assert main(["train", str(tiny_pets), "--out", str(tmp_path / "tiny"), "--image-size", "16"]) == 2
    assert (
        "16x16 are too small for small_convnet: its convolutions and poolings need at least 22x22"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "tiny").exists()  # a mistake found before training leaves no run folder
    only_train = tmp_path / "only_train"
    assert main(["convert", str(kaggle_dir), str(only_train), "--splits", "train=1", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["train", str(only_train), "--out", str(tmp_path / "run"), "--image-size", "24", "--epochs", "1"]) == 0
    printed = capsys.readouterr()
    assert "has no test split: the run reports no test accuracy" in printed.err
    assert "validating on 10% of train" in printed.err and "not evaluated (no test split)" in printed.out
    assert main(["evaluate", str(tmp_path / "run"), str(only_train)]) == 2
    assert "no split 'test'; it has train" in capsys.readouterr().err


@pytest.mark.slow
def test_the_start_line_says_where_resize_and_augmentation_run(fixed_pets, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                str(fixed_pets),
                "--out",
                str(tmp_path / "gpu"),
                "--augment-on",
                "model",
                "--epochs",
                "1",
                "--steps-per-epoch",
                "1",
                "--batch-size",
                "4",
                "--image-size",
                "24",
                "--augment",
                "seed004",
            ]
        )
        == 0
    )
    assert (
        f"on {where_it_trains()} at 24x24 (--image-size); decode in the input pipeline (CPU), "
        "resize + augmentation in the model" in capsys.readouterr().err
    )
    assert keras.models.load_model(tmp_path / "gpu" / "model.keras").input.shape[1:] == (40, 56, 3)  # stored size


def test_a_closed_pipe_ends_inspect_quietly(tiny_pets):
    """`shardflow inspect DATA | head`: the reader goes away; no BrokenPipeError traceback."""
    reader = subprocess.Popen(
        [sys.executable, "-m", "shardflow.cli", "inspect", str(tiny_pets)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader.stdout.close()  # before the command prints its first line
    _, stderr = reader.communicate(timeout=120)
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr
    assert reader.returncode == 141


@pytest.mark.slow
def test_the_submission_does_not_depend_on_stdout_and_says_its_label(tiny_pets, kaggle_dir, tmp_path):
    """`shardflow predict RUN test1/ --csv sub.csv | head -2`: the reader leaves after two lines, and sub.csv is
    still whole; its rows in id order with numbers as numbers (1, 2, ..., 10); the label column's meaning said."""
    run = tmp_path / "run"
    quick = ["--model", "mnist_convnet", "--image-size", "28", "--epochs", "1", "--steps-per-epoch", "1"]
    assert main(["train", str(tiny_pets), "--out", str(run), "--batch-size", "4", *quick]) == 0
    test1 = tmp_path / "test1"
    test1.mkdir()
    photo = (kaggle_dir / "cat.0.jpg").read_bytes()
    count = 1000  # more lines than a pipe's buffer (64 KiB) holds: printing fails once the reader left
    for i in range(1, count + 1):
        (test1 / f"{i}.jpg").write_bytes(photo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = f"{shlex.quote(sys.executable)} -m shardflow.cli predict {run} {test1} --csv {tmp_path / 'sub.csv'}"
    job = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -2"], capture_output=True, text=True, env=env, timeout=300
    )
    assert len(job.stdout.splitlines()) == 2 and "this image is" in job.stdout, job.stdout
    assert job.returncode == 141, job.stderr  # the reader left: 128 + SIGPIPE, as a shell's own commands exit
    rows = list(csv.reader(open(tmp_path / "sub.csv")))
    assert rows[0] == ["id", "label"]
    assert [row[0] for row in rows[1:]] == [str(i) for i in range(1, count + 1)]
    assert all(0 <= float(row[1]) <= 1 for row in rows[1:])
    assert f"wrote {count} predictions to {tmp_path / 'sub.csv'} (label: the probability of dog" in job.stderr
    assert f"{test1 / '1.jpg'}: this image is" in job.stdout.splitlines()[0]  # files in the same order


def test_the_compute_probe_times_fewer_steps_when_they_are_slow():
    """A model of microseconds a step is timed over every probe step; one of about a second a step (a CPU's) over
    MIN_PROBE_STEPS and a little more: the probe adds about a second to the run, not ten."""

    def steps_taken(model: keras.Model, images: tf.Tensor) -> tuple[int, float]:
        model.compile("sgd", "sparse_categorical_crossentropy")
        labels = tf.zeros(images.shape[:1], tf.int64)
        seconds = compute_seconds_per_step(model, tf.data.Dataset.from_tensors((images, labels)))
        return int(model.optimizer.iterations), seconds

    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    assert steps_taken(dense, tf.zeros((8, 4)))[0] == 2 + PROBE_STEPS  # (2: the warm-up)
    convolutions = [keras.layers.Conv2D(32, 3, padding="same") for _ in range(3)]  # (2 cores: 0.7 s a step)
    layers = [keras.Input((128, 128, 3)), *convolutions, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    steps, seconds = steps_taken(keras.Sequential(layers), tf.zeros((24, 128, 128, 3)))
    assert 2 + 1 + MIN_PROBE_STEPS <= steps < 2 + PROBE_STEPS, (steps, seconds)


class StallsOnce(keras.layers.Layer):
    """Passes its input on; the `stall_on`th time it runs, it first sleeps `seconds` (a busy host's stall)."""

    def __init__(self, stall_on: int, seconds: float):
        super().__init__()
        self.stall_on, self.seconds, self.runs = stall_on, seconds, 0

    def _pass(self, x):
        self.runs += 1
        if self.runs == self.stall_on:
            time.sleep(self.seconds)
        return x

    def call(self, x):
        y = tf.py_function(self._pass, [x], x.dtype)
        y.set_shape(x.shape)
        return y


def test_a_stall_in_one_probe_step_does_not_count_as_compute():
    """The compute-only figure is the model's step: a host's 0.5 s stall in one of the probe's steps of about a
    millisecond leaves it at milliseconds (CI once saw the figure a third below the epoch's)."""
    stalls = StallsOnce(stall_on=2 + 4, seconds=0.5)  # the probe's fourth step (2: the warm-up)
    model = keras.Sequential([keras.Input((4,)), stalls, keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    data = tf.data.Dataset.from_tensors((tf.zeros((8, 4)), tf.zeros((8,), tf.int64)))
    seconds = compute_seconds_per_step(model, data)
    assert stalls.runs == 2 + PROBE_STEPS and seconds < 0.02, seconds  # (the mean: 0.056 s)
