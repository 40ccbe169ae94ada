"""`shardflow train` stopped by SIGTERM and resumed (`--resume`) sees exactly the batches of an uninterrupted run
with the same seed and ends with the same weights; real processes (`batch_recorder.py` records each step's batch)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from shardflow.cli import main
from shardflow.pipeline import ReadConfig, read
from shardflow.pipeline.holdout import Holdout
from shardflow.pipeline.reader import batch_count, read_epochs
from shardflow.testing.sample_data import write_sample_data
from shardflow.trainers import resume
from shardflow.trainers.options import TrainOptions
from shardflow.trainers.train import train

RECORDER = pathlib.Path(__file__).with_name("batch_recorder.py")
STEPS = 33  # 3 epochs of 11 batches (85 training images, batch 8); then the throughput probe trains 5-12 more
ARGS = ["--model", "small_convnet", "--epochs", "3", "--image-size", "32", "--batch-size", "8", "--seed", "3"]
ARGS += ["--augment", "seed004"]
FEATURES = ["--model", "features", "--base", "vgg16", "--weights", "none", "--epochs", "5", "--patience", "1"]
FEATURES += ["--image-size", "32", "--batch-size", "8", "--seed", "3", "--lr", "0.01"]  # stops early after epoch 3


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> pathlib.Path:
    """120 sample images stored at 32x32, train in two shards (shuffled, interleaved), validation and test."""
    root = tmp_path_factory.mktemp("resume")
    write_sample_data(root / "raw", n=120, seed=1)
    argv = ["convert", str(root / "raw"), str(root / "data"), "--size", "32", "--shard-size-mb", "0.05"]
    assert main([*argv, "--workers", "1"]) == 0
    return root / "data"


def record(mode, data, out, kill_at=0, *args: str, wait=True, step_seconds=0.0, kill="TERM", options=ARGS):
    """`shardflow train DATA OPTIONS ARGS` (`mode` cli or api) in a new process, its batches appended to
    out.parent/batches-OUT; each step at least `step_seconds` long; SIG`kill` at step `kill_at`."""
    command = [sys.executable, str(RECORDER), mode, str(batches_of(out)), str(kill_at), str(data), *options]
    process = subprocess.Popen(
        [*command, "--out", str(out), *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(RECORDER.parents[1]),
            "STEP_SECONDS": str(step_seconds),
            "SIGNAL": kill,
        },
    )
    if not wait:
        return process
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def batches_of(out: pathlib.Path) -> pathlib.Path:
    return out.parent / f"batches-{out.name}"


def trained_on(out: pathlib.Path, steps: int = STEPS) -> list[dict]:
    """The batches the run in `out` trained on, in order, across its processes (not the throughput probe's)."""
    return [json.loads(line) for line in batches_of(out).read_text().splitlines()][:steps]


def weights(out: pathlib.Path) -> list[np.ndarray]:
    return keras.models.load_model(out / "model.keras").get_weights()


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("runs") / "uninterrupted"
    returncode, stderr = record("api", data, out)
    assert returncode == 0, stderr
    return out


def assert_same_run(run: pathlib.Path, reference: pathlib.Path, steps: int = STEPS) -> None:
    """The same batches (labels and image checksums) in the same order, the same history and weights."""
    seen, expected = trained_on(run, steps), trained_on(reference, steps)
    assert len(seen) == len(expected) == steps
    assert [b["labels"] for b in seen] == [b["labels"] for b in expected]
    assert [b["images"] for b in seen] == [b["images"] for b in expected]
    history, reference_history = (json.loads((out / "history.json").read_text()) for out in (run, reference))
    assert history.keys() == reference_history.keys()
    for key, values in history.items():
        assert values == pytest.approx(reference_history[key], rel=1e-6), key
    for got, want in zip(weights(run), weights(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_stopped_twice_and_resumed_it_sees_the_batches_of_an_uninterrupted_run(data, uninterrupted, tmp_path, capsys):
    """`kill -TERM` in epoch 2 (the CLI, a checkpoint every 4 steps too), a second SIGTERM in epoch 3 of the resumed
    run (the Python API), resumed again (the CLI): the batches, history and weights of the uninterrupted run."""
    out = tmp_path / "run"
    process = record("cli", data, out, 0, "--checkpoint-every", "4", wait=False, step_seconds=0.05)
    while len(batches_of(out).read_text().splitlines() if batches_of(out).exists() else []) < 14:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM: stopped in epoch 2," in stderr and "the same command with --resume continues" in stderr
    state, _ = resume.load(str(out))
    assert state.epoch == 1 and state.steps_done == 11 + state.step
    returncode, stderr = record("api", data, out, 12, "--checkpoint-every", "4", "--resume")
    assert returncode == 128 + signal.SIGTERM, stderr
    state, _ = resume.load(str(out))
    assert state.epoch == 2 and 0 < state.step < 11
    returncode, stderr = record("cli", data, out, 0, "--checkpoint-every", "4", "--resume")
    assert returncode == 0, stderr
    assert_same_run(out, uninterrupted)
    # resumed once more, a finished run says so and changes nothing
    metrics = (out / "metrics.json").read_text()
    assert main(["train", str(data), "--out", str(out), *ARGS, "--resume"]) == 0
    assert f"warning: --resume: the run in {out} is finished (3 epochs); nothing to resume" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == metrics


@pytest.mark.slow
def test_resuming_with_other_arguments_is_refused_naming_them(data, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    state, arrays = resume.load(str(out))
    resume.write(str(out / resume.FILE), state.__class__(**{**state.__dict__, "finished": False}), arrays)
    changed = [*ARGS[:-4], "--seed", "4", "--augment", "seed004", "--lr", "0.01"]
    assert main(["train", str(data), "--out", str(out), *changed, "--resume"]) == 2
    error = capsys.readouterr().err
    assert "--seed 3 (now 4)" in error and "--lr None (now 0.01)" in error and "--epochs" not in error
    options = TrainOptions("small_convnet", epochs=4, batch_size=8, image_size=32, augment="seed004", seed=3)
    with pytest.raises(ValueError, match=r"`epochs` 3 \(now 4\); resume it with the same options"):
        train(str(data), str(out), TrainOptions(**{**options.__dict__, "resume": True}))


@pytest.mark.slow
def test_features_resume_with_early_stopping_as_it_was(data, tmp_path):
    """The features head, stopped in epoch 3 (which early stopping ends the run after, putting epoch 2's weights
    back, saved with the checkpoint), resumed: the batches, history and weights of the uninterrupted run."""
    runs = {name: tmp_path / name for name in ("uninterrupted", "run")}
    assert record("api", data, runs["uninterrupted"], options=FEATURES)[0] == 0
    assert record("api", data, runs["run"], 27, options=FEATURES)[0] == 128 + signal.SIGTERM
    state, arrays = resume.load(str(runs["run"]))
    assert (state.epoch, state.step) == (2, 5) and "EarlyStopping.best_weights" in arrays
    assert record("api", data, runs["run"], 0, "--resume", options=FEATURES)[0] == 0
    assert len(json.loads((runs["run"] / "history.json").read_text())["loss"]) == 3
    assert_same_run(runs["run"], runs["uninterrupted"], steps=33)


def test_resume_needs_a_checkpoint_not_overwrite(data, tmp_path, capsys):
    assert main(["train", str(data), "--out", str(tmp_path / "none"), *ARGS, "--resume"]) == 2
    assert f"--resume: {tmp_path / 'none'} holds no checkpoint" in capsys.readouterr().err
    assert main(["train", str(data), "--out", str(tmp_path / "none"), *ARGS, "--resume", "--overwrite"]) == 2
    assert "--resume continues the run in the folder, --overwrite replaces it" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("cache", [False, True])
def test_an_epoch_is_rebuilt_in_a_new_stream_at_any_batch(data, cache):
    """`read_epochs` from epoch 1 with 3 batches skipped hands out what one stream from epoch 0 does from its 14th
    batch on (11 batches an epoch), also under a global seed of 0 (`train`'s with `seed` 0); epochs differ;
    `batch_count` counts a holdout."""
    config = ReadConfig(batch_size=8, image_size=32, shuffle=True, seed=0, augment="seed004", cache=cache)

    def batches(stream: tf.data.Dataset, n: int) -> list[bytes]:
        return [images.numpy().tobytes() + labels.numpy().tobytes() for images, labels in stream.take(n)]

    tf.random.set_seed(0)
    whole = batches(read_epochs(str(data), "train", config), 30)
    tf.random.set_seed(0)  # (as `train` sets it: with `cache`, the order of the records cached depends on it)
    resumed = batches(read_epochs(str(data), "train", ReadConfig(**{**config.__dict__, "skip": 3}), first=1), 16)
    assert resumed == whole[14:]
    assert whole[:11] != whole[11:22]
    assert batch_count(str(data), "train", config) == 11
    held = ReadConfig(batch_size=4, image_size=32, holdout=Holdout(0.3))
    assert batch_count(str(data), "train", held) == sum(1 for _ in read(str(data), "train", held))


def test_without_a_seed_it_says_so(data, tmp_path):
    options = TrainOptions(epochs=1, steps_per_epoch=2, batch_size=8, image_size=32, checkpoint_every=2, verbose=0)
    with pytest.warns(UserWarning, match="without a `seed` a resumed run continues at the step where it stopped"):
        train(str(data), str(tmp_path / "run"), options)
    state, arrays = resume.load(str(tmp_path / "run"))
    assert state.finished and (state.epoch, state.steps_done) == (1, 2) and not arrays  # (a finished run's)


@pytest.mark.slow
def test_a_killed_run_keeps_its_last_periodic_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    returncode, _ = record("api", data, out, 7, "--checkpoint-every", "3", kill="KILL")
    assert returncode == -signal.SIGKILL
    state, arrays = resume.load(str(out))
    assert (state.epoch, state.step, state.steps_done) == (0, 6, 6) and len(arrays["model"]) == 10


@pytest.mark.slow
def test_stopped_at_the_last_step_it_resumes_to_write_the_results(data, uninterrupted, tmp_path):
    """SIGTERM during the very last step (seen on a small real dataset, where the run was nearly done): the
    checkpoint holds a trained run, and `--resume` writes its results, as the uninterrupted run did."""
    out = tmp_path / "run"
    returncode, stderr = record("api", data, out, STEPS)
    assert returncode == 128 + signal.SIGTERM, stderr
    returncode, stderr = record("cli", data, out, 0, "--resume")
    assert returncode == 0, stderr
    assert f"resuming {out}: its 3 epochs were trained; writing the results" in stderr
    assert_same_run(out, uninterrupted)
