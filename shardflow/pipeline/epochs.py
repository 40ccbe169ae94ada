"""Epochs a new process can rebuild: each epoch's shuffles and augmentation seeded by (seed, epoch) alone, not by
how many passes an iterator has made before (tf.data's `reshuffle_each_iteration`), so a resumed run builds the
interrupted epoch again and skips what it trained on."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

EPOCH_SEED_STRIDE = 1_000_003  # epoch seed = seed * stride + epoch: distinct for the first million epochs
GRAPH_SEED = 87_654_321  # each epoch's own graph-level seed (TensorFlow's default one)


def epoch_seed(seed: int | None, epoch: int | tf.Tensor) -> tf.Tensor | None:
    """The seed of one epoch's shuffles and augmentation in a run seeded with `seed` (None: none)."""
    if seed is None:
        return None
    return tf.constant(seed, tf.int64) * EPOCH_SEED_STRIDE + tf.cast(epoch, tf.int64)


def endless_epochs(epoch: Callable[[tf.Tensor], tf.data.Dataset], first: int = 0) -> tf.data.Dataset:
    """`epoch(number)`'s datasets for number = first, first + 1, ..., one after the other. Each is built in a graph
    with a fixed graph-level seed: its `epoch_seed`s then give the same order whatever the global seed (and
    TensorFlow's seed check, which cannot compare a seed tensor with a global seed of 0, passes)."""

    @tf.autograph.experimental.do_not_convert  # (plain Python: it builds one epoch's pipeline)
    def one(number: tf.Tensor) -> tf.data.Dataset:
        tf.compat.v1.set_random_seed(GRAPH_SEED)
        return epoch(number)

    return tf.data.Dataset.counter(first).flat_map(one)
