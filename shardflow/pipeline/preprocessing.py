"""Everything that decides the pixels a model sees, as one object: how the dataset stored its images (the
conversion's per-image preparation, with the options it recorded) and how `load` reads them (size, crop).

Training writes it beside the model (`RUN/preprocessing.json`); prediction and serving apply it to image files:
each file goes through the conversion's own preparation, becomes a record, and that record through the reader's
parse + decode + resize. A file and its record give the model the same pixels.

Example (serving a trained model outside shardflow's CLI; `runs/pets` is a run folder of `shardflow train`):

    preprocessing = Preprocessing.read("runs/pets/preprocessing.json")
    batch = preprocessing.images([open("cat.jpg", "rb").read()])
    model.predict(batch.images)
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from shardflow.core import files, metadata, schema
from shardflow.core.decoder import Decoder
from shardflow.core.images import ImageOptions, Rejected, prepare
from shardflow.pipeline.parser import Parser

FILE = "preprocessing.json"


class ImageBatch(NamedTuple):
    """The images that could be read, in input order, and each input's problem (None when it was read)."""

    images: np.ndarray  # uint8 [readable inputs, H, W, C]
    problems: list[str | None]


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """A dataset's stored-image options and the model's input size; see the module docstring."""

    class_names: tuple[str, ...]
    image: ImageOptions
    image_size: tuple[int, int]
    crop_to_aspect_ratio: bool = False
    multi_label: bool = False  # the dataset's records hold sets of classes (`schema.RecordSchema.multi_label`)

    @classmethod
    def of_dataset(
        cls, info: metadata.DatasetInfo, image_size: tuple[int, int], crop_to_aspect_ratio: bool = False
    ) -> Preprocessing:
        return cls(
            info.class_names, info.image_options, (image_size[0], image_size[1]), crop_to_aspect_ratio, info.multi_label
        )

    @property
    def schema(self) -> schema.RecordSchema:
        return schema.RecordSchema(self.class_names, self.image.channels, self.image.image_format, self.multi_label)

    @functools.cached_property
    def parser(self) -> Parser:
        """The reader's parser for these records (what `load` uses)."""
        return Parser(
            Decoder(self.schema, self.image.max_side, self.image.size), self.image_size, self.crop_to_aspect_ratio
        )

    def record(self, encoded: bytes, filename: str = "") -> bytes:
        """An image file as the record the conversion would have made of it; raises `Rejected`."""
        label = () if self.multi_label else schema.UNLABELED
        return self.schema.serialize(prepare(encoded, self.image).data, label, filename)

    def images(self, encoded: Sequence[bytes]) -> ImageBatch:
        """Image files (their bytes) -> the model's uint8 input, exactly as training saw such images."""
        records: list[bytes] = []
        problems: list[str | None] = []
        for data in encoded:
            try:
                records.append(self.record(data))
                problems.append(None)
            except Rejected as reason:
                problems.append(str(reason))
        if not records:
            return ImageBatch(np.zeros((0, *self.image_size, self.image.channels), np.uint8), problems)
        return ImageBatch(self._parse(tf.constant(records)).numpy(), problems)

    @functools.cached_property
    def _parse(self):
        return tf.function(
            lambda records: self.parser.parse_batch(records)[0], input_signature=[tf.TensorSpec([None], tf.string)]
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        value: dict[str, Any] = json.loads(text)
        return cls(
            tuple(value["class_names"]),
            ImageOptions(**value["image"]),
            tuple(value["image_size"]),
            value["crop_to_aspect_ratio"],
            value.get("multi_label", False),
        )

    @classmethod
    def read(cls, path: str) -> Preprocessing:
        """From a `preprocessing.json` (a run folder's, or a copy beside a served model)."""
        return cls.from_json(files.read_text(path))
