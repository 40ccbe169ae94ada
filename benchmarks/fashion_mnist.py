"""The real Fashion-MNIST, end to end, beside the tutorial's plain Keras: `shardflow convert` of the four IDX files
(time, duplicates and leaks found), `shardflow train --model fashion_cnn` (validation held out of train by the
trainer, test only reported) and the tutorial's own loop on the same files (numpy arrays / 255, 20% of train held
out at random with seed 42, the same architecture, optimizer and early stopping). Not part of `make test`.

The files: `apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb x`, then

    .venv/bin/python benchmarks/fashion_mnist.py x/usr/share/datasets/fashion-mnist [--epochs 20 --patience 2]
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import tempfile
import time

import keras
import numpy as np

from common import markdown_table
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.trainers import models
from shardflow.trainers.options import TRAINING_DEFAULTS
from shardflow.trainers.train import TrainOptions, train

MODEL, SEED = "fashion_cnn", 0


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def plain_keras(src: str, epochs: int, patience: int) -> dict[str, float]:
    """The tutorial: arrays / 255, train_test_split(test_size=0.2, random_state=42) as a seeded permutation."""
    files = {
        name: os.path.join(src, f"{name}-ubyte.gz")
        for name in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")
    }
    x, y = read_idx(files["train-images-idx3"])[..., None] / 255.0, read_idx(files["train-labels-idx1"])
    x_test, y_test = read_idx(files["t10k-images-idx3"])[..., None] / 255.0, read_idx(files["t10k-labels-idx1"])
    order = np.random.default_rng(42).permutation(len(x))
    held_out, kept = order[: len(x) // 5], order[len(x) // 5 :]
    keras.utils.set_random_seed(SEED)
    model = models.build(MODEL, (28, 28, 1), 10)
    optimizer, lr = TRAINING_DEFAULTS[MODEL]
    model.compile(
        optimizer=keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": lr}}),
        loss=models.loss_for(10),
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    history = model.fit(
        x[kept],
        y[kept],
        batch_size=32,
        epochs=epochs,
        verbose=2,
        validation_data=(x[held_out], y[held_out]),
        callbacks=[keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)],
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {
        "accuracy": accuracy,
        "epochs": len(history.history["loss"]),
        "seconds": time.perf_counter() - started,
        "best_epoch": int(np.argmin(history.history["val_loss"])) + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", help="the folder of the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shardflow-fashion-") as work:
        data = os.path.join(work, "data")
        started = time.perf_counter()
        info = convert(args.src, data, ConvertOptions(workers=args.workers))
        converted = time.perf_counter() - started
        metrics = train(
            data,
            os.path.join(work, "run"),
            TrainOptions(model=MODEL, epochs=args.epochs, patience=args.patience, seed=SEED),
        )
        baseline = plain_keras(args.src, args.epochs, args.patience)
    near, exact = info.duplicates.near, info.duplicates.exact
    print(
        f"\nconversion: {sum(s.num_examples for s in info.splits.values())} records in {converted:.1f} s; "
        f"exact duplicates {exact.groups} groups ({exact.images} images, {exact.leaks} leaks); near "
        f"{near.groups} groups ({near.images} images, {near.leaks} across splits)\n"
    )
    print(
        markdown_table(
            ["run", "validated on", "epochs", "best epoch", "seconds", "test accuracy"],
            [
                [
                    "shardflow train",
                    metrics["validation"]["rule"],
                    metrics["epochs_run"],
                    metrics["best_epoch"],
                    f"{metrics['seconds']:.0f}",
                    f"{metrics['test_accuracy']:.4f}",
                ],
                [
                    "plain Keras (tutorial)",
                    "20% of train, random (seed 42)",
                    baseline["epochs"],
                    baseline["best_epoch"],
                    f"{baseline['seconds']:.0f}",
                    f"{baseline['accuracy']:.4f}",
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
