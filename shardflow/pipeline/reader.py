"""The reader: a converted split's files -> a `tf.data.Dataset` of `(images, labels)` batches, read the fast way.

Shard order is shuffled, shards are read in parallel (`interleave`), records pass a shuffle buffer, are parsed a
batch at a time, decoded at the cheapest JPEG DCT scale and resized (optionally augmented in the same single
resampling), and batches are prefetched. Order is non-deterministic (faster) unless a `seed` asks for repeatable
batches. `load` takes the reading knobs as keywords, `read` as a `ReadConfig`; each step is a function:
shards (`checked_shards`) -> records (`_records`) -> parsed batches (`_parsed_batches`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf

from shardflow.core import metadata
from shardflow.core.decoder import Decoder
from shardflow.core.images import parse_size
from shardflow.core.shards import READ_BUFFER_BYTES, checked_shards, damaged_shards
from shardflow.pipeline import augment as augment_lib
from shardflow.pipeline.epochs import endless_epochs
from shardflow.pipeline.holdout import Holdout
from shardflow.pipeline.parser import Parser
from shardflow.pipeline.read_config import ReadConfig

AUTOTUNE = tf.data.AUTOTUNE


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
        applied on the CPU, fused with the resize into one resampling. For the GPU, use the
        [`Augment`][shardflow.pipeline.Augment] layer.
      repeat: repeat forever (use [`steps_per_epoch`][shardflow.pipeline.steps_per_epoch]).
      cache: keep the decoded, resized images in memory (True) or in files at this path prefix; augmentation
        still varies per epoch.
      take: only the first N records (after shuffling), e.g. for a quick trial run.
      drop_remainder: leave out the last batch when it is partial.
      shuffle_buffer: records held in the shuffle buffer (when shuffling).
      input_context: from `strategy.distribute_datasets_from_function`; each input pipeline reads its own shards.
      data_service: "grpc://host:port" of a `shardflow serve-data` dispatcher to decode on its workers.
      backend: "tf" (tf.data), or "dali" to read and decode with NVIDIA DALI: on the GPU when TensorFlow sees one
        (nvJPEG), else in DALI's CPU mode (slower than "tf"); see [`shardflow.pipeline.dali`][]. Not with `cache`,
        `take`, `data_service`, `holdout` or a multi-label dataset; `augment`'s fill_mode "nearest" or "constant".
      holdout: only a deterministic part of the split: `Holdout(0.1)` the 10% held out by a stable hash of each
        image's path (validation), `Holdout(0.1).rest()` the other 90% (training). The number of batches is then
        not known in advance.

    The arguments after `split` make a [`ReadConfig`][] (checked: a ValueError names the argument); [`read`][]
    takes one.
    """
    return read(
        data_dir,
        split,
        ReadConfig(
            batch_size=batch_size,
            image_size=image_size,
            shuffle=shuffle,
            seed=seed,
            augment=augment,
            crop_to_aspect_ratio=crop_to_aspect_ratio,
            repeat=repeat,
            cache=cache,
            take=take,
            drop_remainder=drop_remainder,
            shuffle_buffer=shuffle_buffer,
            input_context=input_context,
            data_service=data_service,
            backend=backend,
            holdout=holdout,
        ),
    )


def read(data_dir: str, split: str, config: ReadConfig) -> tf.data.Dataset:
    """[`load`][shardflow.pipeline.load], its knobs in a [`ReadConfig`][shardflow.pipeline.ReadConfig]: the split's
    shards -> their records -> parsed batches."""
    info = metadata.read(data_dir)
    config = config.for_split(split)
    size = _image_size(info, config.image_size)
    if config.backend == "dali":
        if info.multi_label:
            raise ValueError("`backend` 'dali' does not support multi-label datasets")
        from shardflow.pipeline import dali

        return dali.load(info, split, checked_shards(info, split), size, config)
    shards, batch_size = _pipeline_shards(info, split, config)
    records, parser = _records([path for path, _ in shards], config), _parser(info, config)
    batches = _parsed_batches(records, parser, batch_size, config)
    if not config.repeat and not config.data_service and config.holdout is None:  # known from the metadata
        count = sum(n for _, n in shards) if config.take is None else min(config.take, sum(n for _, n in shards))
        batches = batches.apply(
            tf.data.experimental.assert_cardinality(  # (Keras uses it)
                _batch_count(count, batch_size, config.drop_remainder) - config.skip
            )
        )
    if config.data_service:
        from shardflow.pipeline.service import distribute

        batches = distribute(batches, config.data_service)
    return batches.prefetch(AUTOTUNE)


def read_epochs(data_dir: str, split: str, config: ReadConfig, first: int = 0) -> tf.data.Dataset:
    """Epoch after epoch of `read`, endlessly, from epoch `first` (take `steps_per_epoch` batches at a time): each
    epoch's order and augmentation a function of (`seed`, epoch) alone (`ReadConfig.epoch`), so a new process
    rebuilds any epoch, and the config's `skip` batches of epoch `first` are left out without being decoded: a
    resumed run's position is a count. Without a `seed`, every epoch is in a new random order."""

    cached = None
    if config.cache:  # one cache for every epoch, filled by the first (its records in the order of `seed`)
        info, config = metadata.read(data_dir), config.for_split(split)
        shards, batch_size = _pipeline_shards(info, split, config)
        cached = _cached_images(_records([path for path, _ in shards], config), _parser(info, config), config)

    def epoch(number: tf.Tensor) -> tf.data.Dataset:
        skip = tf.where(number == first, tf.cast(config.skip, tf.int64), tf.constant(0, tf.int64))
        epoch_config = dataclasses.replace(config, epoch=number, skip=skip, repeat=False)
        if cached is None:
            return read(data_dir, split, epoch_config)
        return _cached_batches(cached, batch_size, epoch_config).prefetch(AUTOTUNE)

    return endless_epochs(epoch, first).prefetch(AUTOTUNE)


def batch_count(data_dir: str, split: str, config: ReadConfig) -> int:
    """Batches in one pass of `read`: from the metadata, or with a `holdout` by counting its records (read, not
    decoded)."""
    shards, batch_size = _pipeline_shards(metadata.read(data_dir), split, config.for_split(split))
    if config.holdout is None:
        count = sum(n for _, n in shards)
    else:
        records = _records([path for path, _ in shards], dataclasses.replace(config, shuffle=False, take=None))
        count = int(records.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    count = count if config.take is None else min(config.take, count)
    return _batch_count(count, batch_size, config.drop_remainder)


def _records(shards: list[str], config: ReadConfig) -> tf.data.Dataset:
    """The shards' serialized records: shuffled, the shards in a shuffled order, read in parallel; else in the stored
    order, shard after shard (evaluation, prediction). Then only the `holdout` part, and the first `take`."""
    if config.shuffle and len(shards) > 1:  # (parallel interleave costs ~15% of a decode-only read: not for one shard)
        shard_files = tf.data.Dataset.from_tensor_slices(shards).shuffle(len(shards), seed=config.pass_seed)
        records = shard_files.interleave(
            lambda path: tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES),
            cycle_length=min(len(shards), 8),
            num_parallel_calls=AUTOTUNE,
            deterministic=config.deterministic,
        )
    else:  # (one shard, shuffled: the shuffle buffer shuffles)
        records = tf.data.TFRecordDataset(shards, buffer_size=READ_BUFFER_BYTES)
    if config.holdout is not None:
        records = records.filter(config.holdout.keeps)
    if config.take is not None:
        records = records.take(config.take)
    return records


def _parsed_batches(records: tf.data.Dataset, parser: Parser, batch_size: int, config: ReadConfig) -> tf.data.Dataset:
    """Records -> `(images, labels)` batches, shuffled and repeated as asked: parsed a batch at a time, the
    augmentation fused into the resize; with `cache`, parsed record by record into the cache and augmented after it
    (differently each epoch)."""
    params, deterministic = augment_lib.parse_augment(config.augment), config.deterministic
    if config.cache:
        return _cached_batches(_cached_images(records, parser, config), batch_size, config)
    batches = _batched(records, batch_size, config)
    if not params:
        return batches.skip(config.skip).map(
            parser.parse_batch, num_parallel_calls=AUTOTUNE, deterministic=deterministic
        )
    return _map_with_keys(batches, lambda serialized, key: parser.parse_batch(serialized, params, key), config)


def _parser(info: metadata.DatasetInfo, config: ReadConfig) -> Parser:
    decoder = Decoder(info.schema, info.max_side, info.stored_size)
    return Parser(decoder, _image_size(info, config.image_size), config.crop_to_aspect_ratio)


def _cached_images(records: tf.data.Dataset, parser: Parser, config: ReadConfig) -> tf.data.Dataset:
    """Records parsed one by one into the `cache` (memory, or files at that path prefix)."""
    images = records.map(parser.parse_record, num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
    return images.cache(config.cache if isinstance(config.cache, str) else "")


def _cached_batches(images: tf.data.Dataset, batch_size: int, config: ReadConfig) -> tf.data.Dataset:
    """Cached images -> batches, shuffled and repeated as asked, augmented after the cache (differently each
    epoch); the first `skip` left out (decoded once, into the cache)."""
    params = augment_lib.parse_augment(config.augment)
    batches = _batched(images, batch_size, config)
    if not params:
        return batches.skip(config.skip)
    return _map_with_keys(
        batches, lambda batch, key: (augment_lib.augment_batch(batch[0], params, key), batch[1]), config
    )


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
        raise metadata.DatasetError(
            f"{data_dir}: damaged shard(s) {'; '.join(damaged)}; `shardflow verify {data_dir}` checks them all"
        ) from error


def steps_per_epoch(data_dir: str, split: str, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches in one pass over a split, from the metadata (no reading)."""
    return _batch_count(metadata.read(data_dir).split(split).num_examples, batch_size, drop_remainder)


def _batch_count(records: int, batch_size: int, drop_remainder: bool) -> int:
    return records // batch_size if drop_remainder else math.ceil(records / batch_size)


def _image_size(info: metadata.DatasetInfo, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
    """The output size: `image_size`, else the stored size of a fixed-size dataset."""
    if image_size is not None:
        return parse_size(image_size, "image_size")
    if info.stored_size is None:
        heights = [h for s in info.splits.values() for h in s.height_range]
        widths = [w for s in info.splits.values() for w in s.width_range]
        raise metadata.DatasetError(
            f"{info.data_dir}: image_size=None needs images of one size, this dataset's vary (heights "
            f"{min(heights)}-{max(heights)}, widths {min(widths)}-{max(widths)}); pass image_size, or convert "
            "with --size"
        )
    return info.stored_size


def _pipeline_shards(info: metadata.DatasetInfo, split: str, config: ReadConfig) -> tuple[list[tuple[str, int]], int]:
    """The shards this input pipeline reads (`(path, records)`) and its batch size."""
    shards = checked_shards(info, split)
    if config.input_context is None:
        return shards, config.batch_size
    context = config.input_context
    return _shards_for_pipeline(shards, context, info.data_dir, split), context.get_per_replica_batch_size(
        config.batch_size
    )


def _shards_for_pipeline(
    shards: list[tuple[str, int]], context: tf.distribute.InputContext, data_dir: str, split: str
) -> list[tuple[str, int]]:
    if len(shards) < context.num_input_pipelines:
        raise metadata.DatasetError(
            f"{data_dir}: split {split!r} has {len(shards)} shard(s) for {context.num_input_pipelines} input "
            "pipelines; convert with a smaller --shard-size-mb so each pipeline gets at least one"
        )
    return shards[context.input_pipeline_id :: context.num_input_pipelines]


def _batched(dataset: tf.data.Dataset, batch_size: int, config: ReadConfig) -> tf.data.Dataset:
    """Shuffled (through a buffer, anew each epoch) and repeated as asked, then batched."""
    if config.shuffle:
        dataset = dataset.shuffle(config.shuffle_buffer, seed=config.pass_seed, reshuffle_each_iteration=True)
    if config.repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size, drop_remainder=config.drop_remainder)


def _map_with_keys(
    dataset: tf.data.Dataset, function: Callable[[Any, tf.Tensor], Any], config: ReadConfig
) -> tf.data.Dataset:
    """`function(element, key)` over the dataset, each element with its own stateless random key [2]: new keys on
    every pass over the dataset (each epoch's augmentation differs, also where nothing is shuffled), the passes'
    keys fixed by the `seed` (and `epoch`), else fresh every run. The first `skip` elements keep their keys, unused."""
    keys = tf.data.Dataset.random(seed=config.pass_seed, rerandomize_each_iteration=True).batch(2)
    return (
        tf.data.Dataset.zip((dataset, keys))
        .skip(config.skip)
        .map(function, num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
    )
