"""`Normalize`: uint8 (or 0..255 float) pixels -> the input scaling a model expects, as a Keras layer.

Every mode is one multiply-add per channel (after RGB -> BGR for Caffe-style models), in plain TF ops, so it runs
on the GPU in the model's compute dtype and reloads from a saved model. The Keras-applications modes match their
`keras.applications.<module>.preprocess_input`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, 0..1 units
_IMAGENET_STD = (0.229, 0.224, 0.225)
_APPLICATIONS: dict[str, str] = {  # Keras-applications model: its preprocess_input style
    **dict.fromkeys(("vgg16", "vgg19", "resnet50", "resnet101", "resnet152"), "caffe"),
    **dict.fromkeys(
        (
            "mobilenet",
            "mobilenet_v2",
            "inception_v3",
            "inception_resnet_v2",
            "xception",
            "resnet50_v2",
            "nasnet_mobile",
        ),
        "tf",
    ),
    **dict.fromkeys(("densenet121", "densenet169", "densenet201"), "torch"),
    # These models rescale inside themselves and expect 0..255 pixels.
    **dict.fromkeys(
        (*(f"efficientnet_b{i}" for i in range(8)), "mobilenet_v3_small", "mobilenet_v3_large", "convnext_tiny"),
        "identity",
    ),
}
NORMALIZE_MODES = ("rescale", "symmetric", "standardize", *_APPLICATIONS)


@keras.saving.register_keras_serializable(package="shardflow")
class Normalize(keras.layers.Layer):
    """Scale pixels in 0..255 (uint8 or float) for a model; returns the layer's compute dtype.

    Modes: "rescale" (x / 255), "symmetric" (x / 127.5 - 1), "standardize" ((x - mean) / std per channel, `mean`
    and `std` in 0..255 units, e.g. from the dataset statistics), or a Keras-applications model name (see
    `NORMALIZE_MODES`) for its own `preprocess_input`.

    Example:
      >>> import numpy as np
      >>> Normalize("symmetric")(np.array([[[[0, 255]]]], dtype="uint8")).numpy().tolist()
      [[[[-1.0, 1.0]]]]
    """

    def __init__(
        self, mode: str = "rescale", mean: Sequence[float] | None = None, std: Sequence[float] | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if mode not in NORMALIZE_MODES:
            raise ValueError(f"unknown normalization mode {mode!r}; choose one of {', '.join(NORMALIZE_MODES)}")
        if (mode == "standardize") != (mean is not None and std is not None):
            raise ValueError("mean= and std= go together, with mode='standardize' only")
        if mean is not None and std is not None and (len(mean) != len(std) or not mean or min(std) <= 0):
            raise ValueError(f"mean and std need one value per channel (std > 0), got mean={mean}, std={std}")
        self.mode = mode
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.bgr = _APPLICATIONS.get(mode) == "caffe"
        self.scale, self.offset = _scale_offset(mode, self.mean, self.std)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and len(self.scale) not in (1, channels):
            raise ValueError(f"Normalize({self.mode!r}) needs {len(self.scale)} channels, the input has {channels}")

    def call(self, inputs):
        x = tf.cast(inputs, self.compute_dtype)
        if self.bgr:
            x = tf.reverse(x, axis=[-1])
        return x * tf.constant(self.scale, self.compute_dtype) + tf.constant(self.offset, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode, "mean": self.mean, "std": self.std}


def _scale_offset(mode: str, mean: list[float] | None, std: list[float] | None) -> tuple[list[float], list[float]]:
    """Per-channel (scale, offset) with output = input * scale + offset (input already BGR for Caffe)."""
    style = _APPLICATIONS.get(mode, mode)
    if style == "rescale":
        return [1 / 255], [0.0]
    if style in ("symmetric", "tf"):
        return [1 / 127.5], [-1.0]
    if style == "caffe":  # ImageNet means, BGR order
        return [1.0] * 3, [-103.939, -116.779, -123.68]
    if style == "torch":  # x / 255, then the ImageNet mean and std
        mean, std = [255 * m for m in _IMAGENET_MEAN], [255 * s for s in _IMAGENET_STD]
    if style in ("standardize", "torch") and mean is not None and std is not None:
        return [1 / s for s in std], [-m / s for m, s in zip(mean, std)]
    return [1.0], [0.0]  # identity
