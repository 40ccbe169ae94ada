"""The record schema's serializer gives TFDS's own bytes (byte-identical shards depend on it)."""

import io

import numpy as np
import pytest
from PIL import Image
from tensorflow_datasets.core import example_serializer

from shardflow.core import schema


def tfds_record(records: schema.RecordSchema, image, label: int, filename: str) -> bytes:
    """What TFDS's ExampleSerializer makes of the same values."""
    serializer = example_serializer.ExampleSerializer(records.features.get_serialized_info())
    encoded = records.features.encode_example(
        {schema.IMAGE: image, schema.LABEL: label, schema.FILENAME: filename.encode("utf-8", "surrogateescape")}
    )
    return serializer.get_tf_example(encoded).SerializeToString(deterministic=True)


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48 * 32 * 3, dtype=np.uint8).reshape(48, 32, 3)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["passthrough", "jpeg", "png"])
@pytest.mark.parametrize("channels", [1, 3])
def test_encoded_records_are_tfds_bytes(image_format, channels):
    records = schema.RecordSchema(("cat", "dog", "猫"), channels, image_format)
    for label, filename in [(1, "cat.1.jpg"), (schema.UNLABELED, "x/\udcff\udcfe.jpg"), (2, "猫/0.jpg")]:
        assert records.serialize(jpeg(), label, filename) == tfds_record(records, jpeg(), label, filename)


@pytest.mark.parametrize("channels", [1, 3])
def test_raw_records_are_tfds_bytes(channels):
    records = schema.RecordSchema(("cat", "dog"), channels, "raw")
    trailing_zeros = np.pad(np.ones((1, 1, channels), np.uint8), ((0, 3), (0, 4), (0, 0)))
    for pixels, label in [(trailing_zeros, 0), (np.full((2, 3, channels), 7, np.uint8), schema.UNLABELED)]:
        assert records.serialize(pixels, label, "a.png") == tfds_record(records, pixels, label, "a.png")
