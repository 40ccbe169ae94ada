"""A part of a split held out for validation: the records whose path (`image/filename`) hashes below a fraction.

The partition depends only on each record's path (FarmHash Fingerprint64, `tf.strings.to_hash_bucket_fast`, stable
across machines and TensorFlow versions), never on the shard order, the seed or the run: every run on a dataset
without a validation split validates on the same images, and never trains on them.
(`shardflow convert --validation-from-train` makes such a split once, in the dataset, by the conversion's own path
hash: the same fraction, not the same images.)
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from shardflow.core import schema

BUCKETS = 2**32


@dataclasses.dataclass(frozen=True)
class Holdout:
    """The records of a split held out (`held_out=True`: what validation reads) or the rest (what training reads)."""

    fraction: float
    held_out: bool = True

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise ValueError(f"a held-out fraction must be between 0 and 1 (exclusive), got {self.fraction:g}")

    def rest(self) -> Holdout:
        """The complement: the records this holdout leaves for training."""
        return dataclasses.replace(self, held_out=not self.held_out)

    def keeps(self, serialized: tf.Tensor) -> tf.Tensor:
        """Whether one serialized record is in this part (a bool scalar, for `Dataset.filter`)."""
        filename = tf.io.parse_single_example(serialized, {schema.FILENAME: tf.io.FixedLenFeature([], tf.string)})
        bucket = tf.strings.to_hash_bucket_fast(filename[schema.FILENAME], BUCKETS)
        return tf.equal(bucket < round(self.fraction * BUCKETS), self.held_out)

    def describe(self, split: str) -> str:
        """E.g. "10% of train, held out by a stable hash of each image's path"."""
        part = f"{self.fraction:.0%} of {split}" if self.held_out else f"{split} less {self.fraction:.0%}"
        return f"{part}, held out by a stable hash of each image's path"
