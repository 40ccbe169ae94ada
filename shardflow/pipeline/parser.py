"""The parser: serialized records -> model input. Each stored image is decoded (by the `Decoder`) and resized to
the model's size; for training, augmentation is fused into that one resampling. The eval path (no augmentation)
is what prediction and serving reuse, so a model sees the same pixels from a file as from its record.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from shardflow.core.decoder import Decoder
from shardflow.pipeline import augment as augment_lib
from shardflow.pipeline.resize import resize


class Parser:
    """Records of one dataset -> uint8 [H, W, C] images of `size` (stretched like Keras, or centre-cropped to its
    aspect ratio first), with their labels (multi-hot for a multi-label dataset: `Decoder.targets`) or filenames.
    Images stored at `size` are only decoded."""

    def __init__(self, decoder: Decoder, size: tuple[int, int], crop_to_aspect_ratio: bool = False):
        self.decoder, self.size, self.crop = decoder, size, crop_to_aspect_ratio

    def image(
        self,
        data: tf.Tensor,
        shape: tf.Tensor | None,
        augment: dict[str, Any] | None = None,
        key: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """One stored image at the model's size; with `augment` (training), augmented in the same resampling."""
        image = self.decoder.image(data, shape, self.size, self.crop)
        if augment:
            return augment_lib.augment_and_resize(image, self.size, augment, key)
        if self.size == self.decoder.stored_size:
            return image  # decode only
        return tf.cast(resize(image, self.size), tf.uint8)

    def parse_record(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One record -> (image, label), no augmentation (what `load(cache=...)` keeps)."""
        fields = self.decoder.parse(serialized)
        return self.image(fields.data, fields.shape), self.decoder.targets(fields.label)

    def parse_batch(
        self,
        serialized: tf.Tensor,
        augment: dict[str, Any] | None = None,
        key: tf.Tensor | None = None,
        with_filenames: bool = False,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """A batch of records, parsed together, each image decoded and resized (and augmented) on its own ->
        (images, labels), or (images, filenames) for prediction."""
        fields = self.decoder.parse(serialized)
        count = tf.shape(fields.data)[0]
        keys = tf.random.experimental.stateless_split(key, num=count) if augment else tf.zeros([count, 2], tf.int64)
        shapes = fields.shape if fields.shape is not None else tf.zeros([count, 3], tf.int64)

        def one(args):
            data, shape, item_key = args
            return self.image(data, shape if fields.shape is not None else None, augment, item_key)

        images = tf.map_fn(
            one,
            (fields.data, shapes, keys),
            fn_output_signature=tf.TensorSpec([*self.size, self.decoder.schema.channels], tf.uint8),
            parallel_iterations=16,
        )
        return images, fields.filename if with_filenames else self.decoder.targets(fields.label)
