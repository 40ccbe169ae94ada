"""The resize to a model's size, written once: the input pipeline's (`Parser`) and the model's (`Resize`, and
`Augment` outside training) give the same pixels for the same stored image.

Bilinear like `tf.image.resize` (stretched, pixel centres aligned), computed in float32 and rounded to whole
0..255 values, as uint8 pixels would hold them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from shardflow.core.images import parse_size


def resize(images: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
    """uint8 or 0..255 float images ([H, W, C] or [B, H, W, C]) -> float32 at `size` (height, width), rounded."""
    resized = tf.image.resize(tf.cast(images, tf.float32), size, method="bilinear")
    return tf.clip_by_value(tf.round(resized), 0, 255)


@keras.saving.register_keras_serializable(package="shardflow")
class Resize(keras.layers.Layer):
    """Stretch images to the model's input size inside the model (on the GPU), with the input pipeline's pixels.

    Takes batches [B, H, W, C] of uint8 or 0..255 floats; returns the layer's compute dtype.

    Example:
      >>> import numpy as np
      >>> images = np.random.randint(0, 256, (2, 96, 128, 3), dtype="uint8")
      >>> Resize((64, 64))(images).shape
      TensorShape([2, 64, 64, 3])
    """

    def __init__(self, output_size: int | Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.output_size = parse_size(output_size, "output_size")

    def call(self, inputs):
        return tf.cast(resize(inputs, self.output_size), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_size": list(self.output_size)}
