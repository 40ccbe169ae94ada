"""The reader: a converted split's files -> a `tf.data.Dataset` of `(images, labels)` batches, read the fast way.

Shard order is shuffled, shards are read in parallel (`interleave`), records pass a shuffle buffer, are parsed a
batch at a time, decoded at the cheapest JPEG DCT scale and resized (optionally augmented in the same single
resampling), and batches are prefetched. Order is non-deterministic (faster) unless a `seed` asks for repeatable
batches.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from shardflow.core import metadata
from shardflow.core.decoder import Decoder
from shardflow.core.images import parse_size
from shardflow.core.shards import READ_BUFFER_BYTES, checked_shards, damaged_shards
from shardflow.pipeline import augment as augment_lib
from shardflow.pipeline.holdout import Holdout
from shardflow.pipeline.parser import Parser

AUTOTUNE = tf.data.AUTOTUNE
BACKENDS = ("tf", "dali")


def load(
    data_dir: str,
    split: str,
    *,
    batch_size: int,
    image_size: int | tuple[int, int] | None,
    shuffle: bool | None = None,
    seed: int | None = None,
    augment: str | dict[str, Any] | None = None,
    crop_to_aspect_ratio: bool = False,
    repeat: bool = False,
    cache: bool | str = False,
    take: int | None = None,
    drop_remainder: bool = False,
    shuffle_buffer: int = 2048,
    input_context: tf.distribute.InputContext | None = None,
    data_service: str | None = None,
    backend: str = "tf",
    holdout: Holdout | None = None,
) -> tf.data.Dataset:
    """`(images, labels)` batches of one split: images uint8 [B, H, W, C], labels int64 [B] (class indices), or
    for a multi-label dataset (`convert --labels` with several classes per image) float32 [B, classes] (multi-hot).

    Args:
      data_dir: a folder written by `shardflow convert`.
      split: "train", "validation", "test", ...
      batch_size: images per batch (the global batch size when `input_context` is given).
      image_size: output size, an int or (height, width). Images are stretched to it (like Keras), or
        centre-cropped to its aspect ratio first with `crop_to_aspect_ratio=True`. None: the stored size of a
        fixed-size dataset (`shardflow convert --size`), decoded only; images already at the size asked for are
        never resized.
      shuffle: shuffle shards and records (default: only for "train"); unshuffled splits keep the stored order.
      seed: makes the order (and augmentation) repeatable: the same seed gives the same batches.
      augment: ImageDataGenerator keyword arguments (a dict, a JSON string or a preset name such as "seed004"),
        applied on the CPU, fused with the resize into one resampling. For the GPU, use the `Augment` layer.
      repeat: repeat forever (use `steps_per_epoch`).
      cache: keep the decoded, resized images in memory (True) or in files at this path prefix; augmentation
        still varies per epoch.
      take: only the first N records (after shuffling), e.g. for a quick trial run.
      input_context: from `strategy.distribute_datasets_from_function`; each input pipeline reads its own shards.
      data_service: "grpc://host:port" of a `shardflow serve-data` dispatcher to decode on its workers.
      backend: "tf" (tf.data), or "dali" to read and decode with NVIDIA DALI: on the GPU when TensorFlow sees one
        (nvJPEG), else in DALI's CPU mode (slower than "tf"); see `shardflow.pipeline.dali`. Not with `cache`,
        `take`, `data_service`, `holdout` or a multi-label dataset; `augment`'s fill_mode "nearest" or "constant".
      holdout: only a deterministic part of the split: `Holdout(0.1)` the 10% held out by a stable hash of each
        image's path (validation), `Holdout(0.1).rest()` the other 90% (training). The number of batches is then
        not known in advance.
    """
    info = metadata.read(data_dir)
    size = _image_size(info, image_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of images, got {batch_size}")
    params = augment_lib.parse_augment(augment)
    shuffle = split == metadata.TRAIN if shuffle is None else shuffle
    deterministic = seed is not None or not shuffle
    shards = checked_shards(info, split)
    if backend == "dali":
        unsupported = [name for name, used in (("cache", cache), ("take", take is not None),
                                               ("data_service", data_service), ("holdout", holdout),
                                               ("multi-label datasets", info.multi_label)) if used]
        if unsupported:
            raise ValueError(f"backend='dali' does not support {', '.join(unsupported)}")
        from shardflow.pipeline import dali

        return dali.load(info, split, shards, batch_size=batch_size, size=size, shuffle=shuffle, seed=seed,
                         params=params, crop_to_aspect_ratio=crop_to_aspect_ratio, repeat=repeat,
                         drop_remainder=drop_remainder, shuffle_buffer=shuffle_buffer, input_context=input_context)
    if backend != "tf":
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if input_context is not None:
        shards = _shards_for_pipeline(shards, input_context, data_dir, split)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    count = sum(n for _, n in shards) if take is None else min(take, sum(n for _, n in shards))
    shards = [path for path, _ in shards]

    if shuffle and len(shards) > 1:  # (parallel interleave costs ~15% of a decode-only read: not for one shard)
        shard_files = tf.data.Dataset.from_tensor_slices(shards).shuffle(len(shards), seed=seed)
        records = shard_files.interleave(
            lambda path: tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES),
            cycle_length=min(len(shards), 8),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
    else:  # the stored order, shard after shard (evaluation, prediction; one shard: the shuffle buffer shuffles)
        records = tf.data.TFRecordDataset(shards, buffer_size=READ_BUFFER_BYTES)
    if holdout is not None:
        records = records.filter(holdout.keeps)
    if take is not None:
        records = records.take(take)
    parser = Parser(Decoder(info.schema, info.max_side, info.stored_size), size, crop_to_aspect_ratio)
    if cache:
        dataset = records.map(parser.parse_record, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        dataset = dataset.cache(cache if isinstance(cache, str) else "")
        dataset = _shuffle_repeat(dataset, shuffle, shuffle_buffer, seed, repeat)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        if params:
            dataset = _with_seeds(dataset, seed).map(
                lambda batch, key: (augment_lib.augment_batch(batch[0], params, key), batch[1]),
                num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    else:
        dataset = _shuffle_repeat(records, shuffle, shuffle_buffer, seed, repeat)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        if params:
            dataset = _with_seeds(dataset, seed).map(
                lambda serialized, key: parser.parse_batch(serialized, params, key),
                num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        else:
            dataset = dataset.map(parser.parse_batch, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if not repeat and not data_service and holdout is None:  # the number of batches is known from the metadata (Keras uses it)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(
            count // batch_size if drop_remainder else math.ceil(count / batch_size)))
    if data_service:
        from shardflow.pipeline.service import distribute

        dataset = distribute(dataset, data_service)
    return dataset.prefetch(AUTOTUNE)


@contextlib.contextmanager
def damaged_shards_named(data_dir: str) -> Iterator[None]:
    """Turn TensorFlow's "corrupted record at N" (which names no file) into an error naming the damaged shards.

    Wrap the loop that iterates a `load` dataset (`model.fit`, `model.evaluate`, a for loop) in it.
    """
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        info = metadata.read(data_dir)
        damaged = [f"{split}: {d}" for split in info.splits for d in damaged_shards(data_dir, split)]
        if not damaged:
            raise
        raise metadata.DatasetError(f"{data_dir}: damaged shard(s) {'; '.join(damaged)}; "
                                    f"`shardflow verify {data_dir}` checks them all") from error


def steps_per_epoch(data_dir: str, split: str, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches in one pass over a split, from the metadata (no reading)."""
    examples = metadata.read(data_dir).split(split).num_examples
    return examples // batch_size if drop_remainder else math.ceil(examples / batch_size)


def _image_size(info: metadata.DatasetInfo, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
    if image_size is not None:
        return parse_size(image_size, "image_size")
    if info.stored_size is None:
        heights = [h for s in info.splits.values() for h in s.height_range]
        widths = [w for s in info.splits.values() for w in s.width_range]
        raise metadata.DatasetError(
            f"{info.data_dir}: image_size=None needs images of one size, this dataset's vary (heights "
            f"{min(heights)}-{max(heights)}, widths {min(widths)}-{max(widths)}); pass image_size, or convert "
            "with --size")
    return info.stored_size


def _shards_for_pipeline(shards: list[tuple[str, int]], context: tf.distribute.InputContext, data_dir: str,
                         split: str) -> list[tuple[str, int]]:
    if len(shards) < context.num_input_pipelines:
        raise metadata.DatasetError(
            f"{data_dir}: split {split!r} has {len(shards)} shard(s) for {context.num_input_pipelines} input "
            "pipelines; convert with a smaller --shard-size-mb so each pipeline gets at least one")
    return shards[context.input_pipeline_id::context.num_input_pipelines]


def _shuffle_repeat(dataset: tf.data.Dataset, shuffle: bool, buffer: int, seed: int | None,
                    repeat: bool) -> tf.data.Dataset:
    if shuffle:
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset.repeat() if repeat else dataset


def _with_seeds(dataset: tf.data.Dataset, seed: int | None) -> tf.data.Dataset:
    """Pair each element with a stateless random key [2]: fixed by `seed`, else fresh every run."""
    keys = tf.data.Dataset.random(seed=seed).batch(2)
    return tf.data.Dataset.zip((dataset, keys))
