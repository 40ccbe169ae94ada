"""What resuming a run at its exact batch costs: the input position, and the checkpoint written on SIGTERM.

On sample JPEGs converted at --max-side 160, read at 150x150 with the seed004 augmentation, batch 32, seed 0,
resuming `--skip` batches into an epoch:
- the count `shardflow train` keeps: `read_epochs(..., skip=N)` rebuilds the epoch and leaves the N batches out
  before decoding (read, shuffled, never decoded); seconds to the first batch after them,
- the same skip after decoding (`read(...).skip(N)`): what a count would cost without it,
- tf.data's own iterator checkpoint (`tf.train.Checkpoint(iterator=...)`) after N batches: seconds to save, its
  size (it holds the shuffle buffer of serialized records and the prefetched batches), seconds to restore and
  reach the next batch;
and the run checkpoint itself (`checkpoint.npz`: variables, optimizer, metrics) of small_convnet at 150x150 with
RMSprop: seconds to write and its size. Usage:

    .venv/bin/python benchmarks/resume.py [--n 3000] [--skip 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import keras
import tensorflow as tf

from common import markdown_table, sample_corpus
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.pipeline import ReadConfig, read
from shardflow.pipeline.reader import read_epochs
from shardflow.trainers import models, resume
from shardflow.trainers.options import TrainOptions

SIZE, BATCH, SEED = 150, 32, 0


def first_batch_seconds(dataset: tf.data.Dataset) -> float:
    started = time.perf_counter()
    next(iter(dataset))
    return time.perf_counter() - started


def megabytes(path: str) -> float:
    if not os.path.isdir(path):
        return os.path.getsize(path) / 1e6
    paths = [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
    return sum(os.path.getsize(p) for p in paths) / 1e6


def iterator_checkpoint(data: str, config: ReadConfig, skip: int, scratch: str) -> tuple[float, float, float]:
    """(seconds to save, MB, seconds to restore and get the next batch) of tf.data's iterator checkpoint."""
    iterator = iter(read(data, "train", config))
    for _ in range(skip):
        next(iterator)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    started = time.perf_counter()
    path = checkpoint.write(os.path.join(scratch, "iterator", "ckpt"))
    saved = time.perf_counter() - started
    started = time.perf_counter()
    fresh = iter(read(data, "train", config))
    tf.train.Checkpoint(iterator=fresh).read(path).assert_consumed()
    next(fresh)
    return saved, megabytes(os.path.dirname(path)), time.perf_counter() - started


def run_checkpoint(scratch: str) -> tuple[float, float, int]:
    """(seconds, MB, parameters) of writing small_convnet's checkpoint.npz after one training step."""
    bare = models.build("small_convnet", (SIZE, SIZE, 3), 2)
    bare.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    bare.fit(tf.zeros((BATCH, SIZE, SIZE, 3)), tf.zeros((BATCH,)), epochs=1, verbose=0)
    checkpointing = resume.Checkpointing(
        os.path.join(scratch, resume.FILE), resume.State.start(scratch, TrainOptions()), None, []
    )
    checkpointing.set_model(bare)
    seconds = checkpointing.save()
    return seconds, megabytes(os.path.join(scratch, resume.FILE)), bare.count_params()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--skip", type=int, default=60)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(SEED)
    with sample_corpus(args.n, layout="kaggle") as (work, src):
        data = os.path.join(work, "data")
        convert(src, data, ConvertOptions(max_side=160, workers=1))
        config = ReadConfig(batch_size=BATCH, image_size=SIZE, shuffle=True, seed=SEED, augment="seed004")
        with_skip = ReadConfig(**{**config.__dict__, "skip": args.skip})
        rows = [
            ["epoch start (no skip)", f"{first_batch_seconds(read_epochs(data, 'train', config, 1)):.2f}", "-"],
            [
                f"count: skip {args.skip} batches undecoded",
                f"{first_batch_seconds(read_epochs(data, 'train', with_skip, 1)):.2f}",
                "-",
            ],
            [
                f"skip {args.skip} batches after decoding",
                f"{first_batch_seconds(read(data, 'train', config).skip(args.skip)):.2f}",
                "-",
            ],
        ]
        with tempfile.TemporaryDirectory() as scratch:
            saved, size, restored = iterator_checkpoint(data, config, args.skip, scratch)
            rows.append([f"tf.data iterator checkpoint: save after {args.skip}", f"{saved:.2f}", f"{size:.1f}"])
            rows.append(["tf.data iterator checkpoint: restore + next batch", f"{restored:.2f}", "-"])
            seconds, size, params = run_checkpoint(scratch)
            what = f"checkpoint.npz, small_convnet ({params:,} parameters, RMSprop)"
            rows.append([what, f"{seconds:.2f}", f"{size:.1f}"])
    print(f"{args.n} images, batch {BATCH}, {SIZE}x{SIZE}, seed004, {os.cpu_count()} CPUs", file=sys.stderr)
    print(markdown_table(["what", "seconds", "MB"], rows))


if __name__ == "__main__":
    main()
