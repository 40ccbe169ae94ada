"""The decoder: serialized records -> their fields (by the schema's parse spec), and a stored image -> uint8
pixels, decoding no more pixels than the size a model needs.

JPEGs are decoded at the largest DCT scale (1/1, 1/2, 1/4, 1/8) that still covers the target size, read from the
header first; with `crop_to_aspect_ratio`, only the central crop of the target aspect is decoded
(`decode_and_crop_jpeg`). PNG and raw records decode in full.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from shardflow.core import schema

# MAX_PIXELS, the converter's limit: a shard crafted elsewhere cannot make us decode a bomb
from shardflow.core.images import MAX_PIXELS

DCT_RATIOS = (1, 2, 4, 8)
DCT_METHOD = "INTEGER_FAST"  # libjpeg's fastest inverse DCT (prediction and serving decode through this module too)


def usable_ratios(target: tuple[int, int] | None, max_side: int | None) -> tuple[int, ...]:
    """The DCT ratios that can cover `target` (None: full size) for images whose longer side is at most
    `max_side` (None: any).

    With `--max-side 160` and a 150x150 target only 1 is left, and decoding skips choosing (a larger image in a
    shard made elsewhere is then decoded in full: slower, never wrong)."""
    if target is None:
        return (1,)
    if max_side is None:
        return DCT_RATIOS
    return tuple(r for r in DCT_RATIOS if r == 1 or (max_side + r - 1) // r >= max(target))


def dct_ratio(
    height: tf.Tensor, width: tf.Tensor, target: tuple[int, int], ratios: tuple[int, ...] = DCT_RATIOS
) -> tf.Tensor:
    """Index into `ratios` of the largest ratio whose scaled image still covers `target` (height, width)."""
    index = tf.constant(0)
    for i, ratio in enumerate(ratios[1:], start=1):
        covers = tf.logical_and((height + ratio - 1) // ratio >= target[0], (width + ratio - 1) // ratio >= target[1])
        index = tf.where(covers, i, index)
    return index


def central_crop_window(height: tf.Tensor, width: tf.Tensor, aspect: float) -> tf.Tensor:
    """[y, x, h, w] of the largest central window with width / height == aspect."""
    crop_h = tf.minimum(height, tf.cast(tf.round(tf.cast(width, tf.float32) / aspect), tf.int32))
    crop_w = tf.minimum(width, tf.cast(tf.round(tf.cast(height, tf.float32) * aspect), tf.int32))
    crop_h, crop_w = tf.maximum(crop_h, 1), tf.maximum(crop_w, 1)
    return tf.stack([(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w])


def decode_jpeg(
    data: tf.Tensor,
    channels: int,
    target: tuple[int, int] | None,
    crop_to_aspect_ratio: bool,
    max_side: int | None = None,
) -> tf.Tensor:
    """A JPEG decoded at the cheapest DCT scale that covers `target`; uint8 [h, w, channels]."""
    shape = tf.image.extract_jpeg_shape(data)
    height, width = shape[0], shape[1]
    data = _within_budget(data, height, width)
    if target is None:  # the whole image at full size
        return tf.ensure_shape(
            tf.io.decode_jpeg(data, channels=channels, dct_method=DCT_METHOD), [None, None, channels]
        )
    ratios = usable_ratios(target, max_side)
    if crop_to_aspect_ratio:
        window = central_crop_window(height, width, target[1] / target[0])
        index = dct_ratio(window[2], window[3], target, ratios)

        def branch(ratio: int):
            # The crop window applies to the scaled image: scale it the way libjpeg scales the image.
            scaled = (window + ratio - 1) // ratio
            scaled_size = (shape[:2] + ratio - 1) // ratio
            box = tf.concat(
                [
                    tf.minimum(scaled[:2], scaled_size - 1),
                    tf.maximum(1, tf.minimum(scaled[2:], scaled_size - scaled[:2])),
                ],
                axis=0,
            )
            return lambda: tf.image.decode_and_crop_jpeg(
                data, box, channels=channels, ratio=ratio, dct_method=DCT_METHOD
            )
    else:
        index = dct_ratio(height, width, target, ratios)

        def branch(ratio: int):
            return lambda: tf.io.decode_jpeg(data, channels=channels, ratio=ratio, dct_method=DCT_METHOD)

    image = branch(1)() if len(ratios) == 1 else tf.switch_case(index, [branch(r) for r in ratios])
    return tf.ensure_shape(image, [None, None, channels])


def decode(
    data: tf.Tensor,
    shape: tf.Tensor | None,
    encoding: str,
    channels: int,
    target: tuple[int, int] | None,
    crop_to_aspect_ratio: bool = False,
    max_side: int | None = None,
) -> tf.Tensor:
    """One stored image (`data`: encoded bytes, or raw pixel bytes with their `shape`) as uint8 [h, w, channels].

    JPEGs come back already cropped to the target aspect when asked; for PNG and raw the caller crops. With no
    `target`, the whole image at full size.
    """
    if encoding == "jpeg":
        return decode_jpeg(data, channels, target, crop_to_aspect_ratio, max_side)
    if encoding == "png":
        header = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.uint8), tf.int32)  # IHDR size
        width = ((header[0] * 256 + header[1]) * 256 + header[2]) * 256 + header[3]
        height = ((header[4] * 256 + header[5]) * 256 + header[6]) * 256 + header[7]
        image = tf.io.decode_png(_within_budget(data, height, width), channels=channels)
    elif encoding == "raw":
        image = tf.reshape(tf.io.decode_raw(data, tf.uint8), tf.cast(shape, tf.int32))
    else:
        raise ValueError(f"unknown stored encoding {encoding!r}; expected one of jpeg, png, raw")
    image = tf.ensure_shape(image, [None, None, channels])
    if crop_to_aspect_ratio and target is not None:
        window = central_crop_window(tf.shape(image)[0], tf.shape(image)[1], target[1] / target[0])
        image = image[window[0] : window[0] + window[2], window[1] : window[1] + window[3]]
    return image


def _within_budget(data: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """`data`, once its header's size is known to be within MAX_PIXELS (else InvalidArgumentError)."""
    pixels = tf.cast(height, tf.int64) * tf.cast(width, tf.int64)
    check = tf.debugging.assert_less_equal(
        pixels,
        tf.constant(MAX_PIXELS, tf.int64),
        message=f"image larger than the {MAX_PIXELS / 1e6:.0f} MP pixel budget (decompression bomb?)",
    )
    with tf.control_dependencies([check]):
        return tf.identity(data)


def multi_hot(indices: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Class indices [..., k] (padding -1: none) -> float32 multi-hot vectors [..., num_classes]."""
    return tf.minimum(tf.reduce_sum(tf.one_hot(indices, num_classes, dtype=tf.float32), axis=-2), 1.0)


class Fields(NamedTuple):
    """A record's (or a batch's) fields: the stored image (`data`, plus `shape` for raw pixels), label (a
    multi-label record's class indices, a batch's padded with -1), filename."""

    data: tf.Tensor
    shape: tf.Tensor | None
    label: tf.Tensor
    filename: tf.Tensor


class Decoder:
    """Records of one dataset -> fields -> uint8 images; everything it knows of the layout comes from the schema."""

    def __init__(
        self,
        record_schema: schema.RecordSchema,
        max_side: int | None = None,
        stored_size: tuple[int, int] | None = None,
    ):
        self.schema, self.max_side, self.stored_size = record_schema, max_side, stored_size
        self._spec = record_schema.parse_spec()

    def parse(self, serialized: tf.Tensor) -> Fields:
        """Fields of one serialized record (a scalar) or of a batch (a vector)."""
        parsed = tf.io.parse_example(serialized, self._spec)
        image = {key.removeprefix(schema.IMAGE).lstrip("/") or "value": parsed[key] for key in self.schema.image_keys}
        return Fields(image["value"], image.get("shape"), parsed[schema.LABEL], parsed[schema.FILENAME])

    def targets(self, label: tf.Tensor) -> tf.Tensor:
        """What a model learns from a record's (or a batch's) `Fields.label`: the int64 class index, or for a
        multi-label dataset the float32 multi-hot vector of its classes."""
        if not self.schema.multi_label:
            return label
        return multi_hot(label, len(self.schema.class_names))

    def image(
        self,
        data: tf.Tensor,
        shape: tf.Tensor | None,
        target: tuple[int, int] | None = None,
        crop_to_aspect_ratio: bool = False,
    ) -> tf.Tensor:
        """One stored image as uint8 [h, w, channels], decoded at the cheapest scale that covers `target`; at the
        stored size of a fixed-size dataset (`target` None or equal to it), a plain full decode."""
        if self.stored_size is not None and target in (None, self.stored_size):
            return self._stored(data, shape, self.stored_size)
        return decode(
            data, shape, self.schema.encoding, self.schema.channels, target, crop_to_aspect_ratio, self.max_side
        )

    def _stored(self, data: tf.Tensor, shape: tf.Tensor | None, stored_size: tuple[int, int]) -> tf.Tensor:
        """An image of a fixed-size dataset, decoded in full. A JPEG is decoded through a window of the stored size:
        decoded memory stays that of the stored size whatever a record holds (no header check per image, the
        cheapest decode there is), and a smaller image is an error."""
        if self.schema.encoding == "jpeg":
            image = tf.image.decode_and_crop_jpeg(
                data, [0, 0, *stored_size], channels=self.schema.channels, dct_method=DCT_METHOD
            )
        else:
            image = decode(data, shape, self.schema.encoding, self.schema.channels, None)
        return tf.ensure_shape(image, [*stored_size, self.schema.channels])
