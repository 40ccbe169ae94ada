"""The record schema, defined once: the converter writes it, the reader parses it, TFDS documents it.

Records are `tf.train.Example`s with the keys of TFDS `cats_vs_dogs`: `image` (encoded bytes), `label`
(int64 class index, -1 when unlabeled) and `image/filename` (path relative to the source root). With
`--image-format raw`, the image is TFDS's dynamic-shape tensor: `image/value` (uint8 bytes) + `image/shape`.
Serialization goes through the TFDS feature spec, which needs no TensorFlow import (cheap Beam workers).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

IMAGE = "image"
LABEL = "label"
FILENAME = "image/filename"
IMAGE_FORMATS = ("passthrough", "jpeg", "png", "raw")
UNLABELED = -1


def stored_encoding(image_format: str) -> str:
    """The encoding the records hold: passthrough keeps (or re-encodes to) JPEG."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {image_format!r}; choose one of {', '.join(IMAGE_FORMATS)}")
    return "jpeg" if image_format == "passthrough" else image_format


def features(class_names: Sequence[str], channels: int, image_format: str) -> tfds.features.FeaturesDict:
    """The TFDS feature spec of a shardflow dataset."""
    encoding = stored_encoding(image_format)
    if encoding == "raw":
        image = tfds.features.Tensor(shape=(None, None, channels), dtype=np.uint8, encoding="bytes")
    else:
        image = tfds.features.Image(shape=(None, None, channels), encoding_format=encoding)
    return tfds.features.FeaturesDict(
        {
            IMAGE: image,
            LABEL: tfds.features.ClassLabel(names=list(class_names)),
            FILENAME: tfds.features.Text(),
        }
    )


def serialize(spec: tfds.features.FeaturesDict, image: bytes | np.ndarray, label: int, filename: str) -> bytes:
    """One serialized `tf.train.Example`; `filename` may hold surrogate escapes (non-UTF-8 names)."""
    encoded = spec.encode_example({IMAGE: image, LABEL: label, FILENAME: filename.encode("utf-8", "surrogateescape")})
    # Deterministic: protobuf map order otherwise varies between processes, and so would the shards' checksums.
    serializer = example_serializer.ExampleSerializer(spec.get_serialized_info())
    return serializer.get_tf_example(encoded).SerializeToString(deterministic=True)
