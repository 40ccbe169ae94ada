"""Input-pipeline throughput, side by side in one run on the same JPEG corpus: 150x150, batch 32.

ImageDataGenerator.flow_from_directory (tf_keras, as the tutorials use it) with rescale only and with the
tutorials' augmentation; keras.utils.image_dataset_from_directory (+ Keras augmentation layers in `map`);
shardflow's `load` on converted shards (passthrough, --max-side 160, and --size 150 read at its stored size:
decode only); and the ceilings, a pure parallel JPEG decode of the same bytes, alone and followed by the resize
to 150x150. Methods are interleaved: each round times every method once (a fresh iterator each time), and the
table gives each method's median over the rounds. Usage:

    .venv/bin/python benchmarks/pipeline.py [--n 3000] [--batches 40] [--seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
from collections.abc import Callable, Iterator

import tensorflow as tf

from common import (
    image_data_generator,
    images_per_second,
    keras_augmentation,
    keras_image_dataset,
    markdown_table,
    paired_ratios,
    sample_corpus,
)
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.pipeline import load
from shardflow.pipeline.augment import PRESETS

SIZE, BATCH = 150, 32
AUGMENT = PRESETS["seed004"]


def generator_batches(src: str, augment: bool) -> Iterator:
    return iter(image_data_generator(src, SIZE, BATCH, AUGMENT if augment else None))


def keras_dataset_batches(src: str, augment: bool) -> Iterator:
    dataset = keras_image_dataset(src, SIZE, BATCH)
    if augment:
        layers = keras_augmentation()
        dataset = dataset.map(lambda x, y: (layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return iter(dataset.repeat().prefetch(tf.data.AUTOTUNE))


def shardflow_batches(data: str, augment: bool, image_size: int | None = SIZE) -> Iterator:
    return iter(
        load(data, "train", batch_size=BATCH, image_size=image_size, repeat=True, augment=AUGMENT if augment else None)
    )


def decode_ceiling(data: str, resize: bool = False) -> Iterator:
    """Pure parallel JPEG decode (full size) of the same record bytes, read into memory first; with `resize`,
    each image also resized to SIZE x SIZE (what any pipeline must do to batch them)."""
    from shardflow.core import metadata
    from shardflow.core.decoder import DCT_METHOD, Decoder

    info = metadata.read(data)
    decoder = Decoder(info.schema)
    blobs = [decoder.parse(r).data.numpy() for r in tf.data.TFRecordDataset(info.shard_paths("train"))]
    dataset = tf.data.Dataset.from_tensor_slices(blobs).repeat()

    def per_image(blob):
        image = tf.io.decode_jpeg(blob, channels=3, dct_method=DCT_METHOD)  # the decode `load` uses
        return tf.image.resize(image, (SIZE, SIZE)) if resize else tf.shape(image)[0]

    dataset = dataset.map(per_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return iter(dataset.batch(BATCH).prefetch(tf.data.AUTOTUNE))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="sample images (default 3000)")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per method and round (default 40)")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="and at least this many seconds per method and round (default 2)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all methods (default 3)")
    args = parser.parse_args(argv)
    with sample_corpus(args.n) as (work, src):
        data = {}
        for name, options in (("passthrough", {}), ("max-side 160", {"max_side": 160}), ("size 150", {"size": SIZE})):
            data[name] = os.path.join(work, name.replace(" ", "_"))
            with contextlib.redirect_stdout(io.StringIO()):
                convert(src, data[name], ConvertOptions(**options, splits={"train": 1.0}, workers=2))
        methods: dict[str, Callable[[], Iterator]] = {
            "ImageDataGenerator, augmented": lambda: generator_batches(src, True),
            "ImageDataGenerator, rescale only": lambda: generator_batches(src, False),
            "image_dataset_from_directory + Keras layers, augmented": lambda: keras_dataset_batches(src, True),
            "image_dataset_from_directory": lambda: keras_dataset_batches(src, False),
            "shardflow load, passthrough, augmented (CPU)": lambda: shardflow_batches(data["passthrough"], True),
            "shardflow load, --max-side 160, augmented (CPU)": lambda: shardflow_batches(data["max-side 160"], True),
            "shardflow load, passthrough": lambda: shardflow_batches(data["passthrough"], False),
            "shardflow load, --max-side 160": lambda: shardflow_batches(data["max-side 160"], False),
            "shardflow load, --size 150 (decode only)": lambda: shardflow_batches(data["size 150"], False, None),
            "ceiling: parallel JPEG decode, passthrough bytes": lambda: decode_ceiling(data["passthrough"]),
            "ceiling: parallel JPEG decode, --max-side 160 bytes": lambda: decode_ceiling(data["max-side 160"]),
            "ceiling: parallel JPEG decode, --size 150 bytes": lambda: decode_ceiling(data["size 150"]),
            "ceiling: parallel JPEG decode + resize, passthrough bytes": lambda: decode_ceiling(
                data["passthrough"], resize=True
            ),
            "ceiling: parallel JPEG decode + resize, --max-side 160 bytes": lambda: decode_ceiling(
                data["max-side 160"], resize=True
            ),
        }
        rounds: dict[str, list[float]] = {name: [] for name in methods}
        for round_ in range(args.rounds):
            for name, make in methods.items():
                rounds[name].append(images_per_second(make(), args.batches, args.seconds))
                print(f"round {round_ + 1}/{args.rounds}: {name}: {rounds[name][-1]:.0f} images/s", file=sys.stderr)
        rates = {name: statistics.median(values) for name, values in rounds.items()}
        baseline = rates["ImageDataGenerator, augmented"]
        plain = rates["ImageDataGenerator, rescale only"]
        keras_plain = rates["image_dataset_from_directory"]
        print(
            f"\n{args.n} JPEGs (200-500 px), {SIZE}x{SIZE}, batch {BATCH}, {os.cpu_count()} cores, "
            f"median of {args.rounds} interleaved rounds\n"
        )
        headers = ["input pipeline", "images/s", "rounds' range", "vs IDG aug", "vs IDG", "vs image_dataset"]
        print(
            markdown_table(
                headers,
                [
                    [
                        name,
                        f"{rate:.0f}",
                        f"{min(rounds[name]):.0f}-{max(rounds[name]):.0f}",
                        f"{rate / baseline:.1f}x",
                        f"{rate / plain:.1f}x",
                        f"{rate / keras_plain:.2f}x",
                    ]
                    for name, rate in rates.items()
                ],
            )
        )
        corpus = rates["ceiling: parallel JPEG decode, passthrough bytes"]  # passthrough stores the source bytes
        for name in ("passthrough", "--max-side 160"):
            rate = rates[f"shardflow load, {name}"]
            decode_only = rate / rates[f"ceiling: parallel JPEG decode, {name} bytes"]
            with_resize = rate / rates[f"ceiling: parallel JPEG decode + resize, {name} bytes"]
            print(
                f"shardflow load, {name}: {rate / corpus:.0%} of the source JPEGs' decode ceiling; "
                f"{decode_only:.0%} of its own bytes' decode ceiling, {with_resize:.0%} of their decode + resize"
            )

        def paired(name: str, other: str) -> float:
            """The median over rounds of one method's rate over another's in the same round."""
            return statistics.median(paired_ratios(rounds[name], rounds[other]))

        fixed = "shardflow load, --size 150 (decode only)"
        print(
            f"{fixed}: {paired(fixed, 'ceiling: parallel JPEG decode, --size 150 bytes'):.0%} of its own bytes' "
            f"decode ceiling (goal >= 90%), {paired(fixed, 'shardflow load, --max-side 160'):.2f}x `load` of "
            "--max-side 160 at 150x150 (goal >= 1.5x); each the median of the rounds' ratios"
        )


if __name__ == "__main__":
    main()
