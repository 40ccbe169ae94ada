"""Epoch time of `book_convnet` with seed-004 augmentation at 150x150, batch 32, side by side in one run:
ImageDataGenerator.flow_from_directory feeding `model.fit` (as in Deep Learning with Python) vs `shardflow train`.

Each method trains 2 epochs; the table shows the second (the first includes tracing). Usage:

    .venv/bin/python benchmarks/train.py [--n 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time

import keras

from common import image_data_generator, markdown_table, sample_corpus
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.pipeline.augment import PRESETS
from shardflow.trainers import models
from shardflow.trainers.train import TrainOptions, train

SIZE, BATCH, EPOCHS = 150, 32, 2


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.perf_counter() - self.started


def image_data_generator_epoch(src: str) -> float:
    """The book's loop: ImageDataGenerator(rescale, augmentation).flow_from_directory -> model.fit."""
    flow = image_data_generator(src, SIZE, BATCH, PRESETS["seed004"])
    model = models.build("book_convnet", (SIZE, SIZE, 3), 2)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-4), loss="binary_crossentropy", metrics=["accuracy"])
    timer = EpochTimes()
    batches = ((x, y) for x, y in flow)
    model.fit(batches, steps_per_epoch=len(flow), epochs=EPOCHS, callbacks=[timer], verbose=0)
    return timer.last


def shardflow_epoch(data: str, out: str) -> float:
    """`shardflow train`: the same model, augmentation fused into the tf.data pipeline (no GPU here)."""
    metrics = train(
        data,
        out,
        TrainOptions(
            model="book_convnet", epochs=EPOCHS, batch_size=BATCH, image_size=SIZE, augment="seed004", verbose=0
        ),
    )
    return metrics["epoch_seconds"][-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="sample images (default 1000)")
    args = parser.parse_args(argv)
    with sample_corpus(args.n) as (work, src):
        data = os.path.join(work, "data")
        with contextlib.redirect_stdout(io.StringIO()):
            convert(src, data, ConvertOptions(splits={"train": 1.0}, workers=2))
        results = {
            "ImageDataGenerator.flow_from_directory + model.fit": image_data_generator_epoch(src),
            "shardflow train --augment seed004 (augmentation fused in the CPU pipeline)": shardflow_epoch(
                data, os.path.join(work, "run")
            ),
        }
        baseline = next(iter(results.values()))
        print(f"\nbook_convnet, {args.n} images, {SIZE}x{SIZE}, batch {BATCH}, {os.cpu_count()} cores, second epoch\n")
        print(
            markdown_table(
                ["training input", "epoch seconds", "speed-up"],
                [[name, f"{s:.1f}", f"{baseline / s:.2f}x"] for name, s in results.items()],
            )
        )


if __name__ == "__main__":
    main()
