"""Shared by the benchmark scripts: sample corpora in a scratch folder, the tutorials' input pipelines
(ImageDataGenerator, image_dataset_from_directory and Keras' augmentation layers), timing an input, and Markdown
tables for the README, ratios of methods run side by side. TensorFlow and Keras are imported by the functions
that need them."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from shardflow.testing.sample_data import write_sample_data


@contextlib.contextmanager
def sample_corpus(n: int, layout: str = "folders") -> Iterator[tuple[str, str]]:
    """(scratch folder, folder of n sample JPEGs in it); the scratch folder is deleted afterwards."""
    work = tempfile.mkdtemp(prefix="shardflow-bench-")
    try:
        src = os.path.join(work, "raw")
        print(f"writing {n} sample images...", file=sys.stderr)
        write_sample_data(src, layout=layout, n=n)
        yield work, src
    finally:
        shutil.rmtree(work, ignore_errors=True)


def image_data_generator(
    src: str, size: int, batch_size: int, augment: dict[str, Any] | None, rescale: float | None = 1.0 / 255
):
    """tf_keras' ImageDataGenerator(rescale, **augment).flow_from_directory(src), as the tutorials use it: an
    endless iterator of (float32 images, float32 0/1 labels) batches of two classes."""
    from tf_keras.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(rescale=rescale, **(augment or {}))
    with contextlib.redirect_stdout(io.StringIO()):  # "Found N images belonging to 2 classes."
        return generator.flow_from_directory(src, target_size=(size, size), batch_size=batch_size, class_mode="binary")


def keras_image_dataset(src: str, size: int, batch_size: int):
    """keras.utils.image_dataset_from_directory(src): (float32 0..255 images, float32 0/1 labels) batches."""
    import keras

    with contextlib.redirect_stdout(io.StringIO()):
        return keras.utils.image_dataset_from_directory(
            src, image_size=(size, size), batch_size=batch_size, label_mode="binary"
        )


def keras_augmentation():
    """Keras' preprocessing layers doing the tutorials' seed-004 ImageDataGenerator augmentation."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomRotation(40 / 360, fill_mode="nearest"),
            keras.layers.RandomTranslation(0.2, 0.2, fill_mode="nearest"),
            keras.layers.RandomShear(0.2 / 45, 0.2 / 45, fill_mode="nearest"),
            keras.layers.RandomZoom(0.2, fill_mode="nearest"),
            keras.layers.RandomFlip("horizontal"),
        ],
        name="keras_augmentation",
    )


def images_per_second(batches: Iterator, count: int, seconds: float) -> float:
    """Images per second of an input alone, after a warm-up, timed over at least `count` batches and `seconds`.
    A batch is an array or a tuple whose first item holds the images."""
    for _ in range(3):  # warm-up: start threads, fill buffers, trace functions
        next(batches)
    started, done, images = time.perf_counter(), 0, 0
    while done < count or time.perf_counter() - started < seconds:
        images += batch_images(next(batches))
        done += 1
    return images / (time.perf_counter() - started)


def batch_images(batch: Any) -> int:
    """The number of images in a batch (an array, or a tuple of arrays with the images first)."""
    return len(batch[0] if isinstance(batch, tuple) else batch)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Each round's numerator over its denominator (two methods run side by side in that round), sorted: their
    median is robust to a machine whose speed drifts between rounds, as the ratio of each one's best is not."""
    return sorted(a / b for a, b in zip(numerators, denominators))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """First column left-aligned, the others right-aligned; cells already formatted as strings."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return (
            "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])
