"""Pictures of a dataset's images: `shardflow preview` (what the model will see, each image next to augmented
versions of itself) and the dataset card's samples (a few stored images per class).

TensorFlow and matplotlib are imported when a picture is drawn, not with this module (the CLI reads
`preview_grid`'s defaults).
"""
from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image

from shardflow import figures, metadata, schema
from shardflow.images import central_crop_box

SAMPLE_SIZE = 96  # pixels of each sample in the card's grid (centre-cropped square thumbnails)
SAMPLE_CLASSES = 20  # the card's grid shows the first classes only: one row each
SAMPLE_SCAN = 5000  # records read at most to find them (a rare class may show fewer images, or none)


def preview_grid(data_dir: str, out: str, *, split: str = metadata.TRAIN, augment: str | dict[str, Any] | None = None,
                 images: int = 4, variants: int = 5, image_size: int = 150, seed: int = 0) -> str:
    """Write a PNG grid to `out`: one row per image, its class name above; with `augment`, the original then
    `variants` augmented versions (like the augmented-cat figure of Deep Learning with Python)."""
    import tensorflow as tf

    from shardflow.pipeline import augment as augment_lib
    from shardflow.pipeline.reader import damaged_shards_named, load

    info = metadata.read(data_dir)
    params = augment_lib.parse_augment(augment)
    with damaged_shards_named(data_dir):
        batch, labels = next(iter(load(data_dir, split, batch_size=images, image_size=image_size, seed=seed)))
    columns = [batch.numpy()]
    if params:
        keys = tf.random.experimental.stateless_split(tf.constant([seed, 0], tf.int64), num=variants)
        columns += [augment_lib.augment_batch(batch, params, key).numpy() for key in keys]
    rows = []
    for row, label in enumerate(labels.numpy()):
        name = info.class_names[label] if 0 <= label < len(info.class_names) else "unlabeled"
        rows.append((name + ("  (original, then augmented)" if params and row == 0 else ""),
                     [column[row] for column in columns]))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(figures.image_grid(rows, image_size))
    return out


def class_samples(info: metadata.DatasetInfo, records: Iterable[bytes], per_class: int = 4) -> bytes:
    """PNG bytes: a row of `per_class` images for each class (the first `SAMPLE_CLASSES`), the first found among
    `records` (serialized records of the dataset), reading at most `SAMPLE_SCAN` of them.

    Parsed with NumPy and decoded with Pillow: no TensorFlow import (seconds) in the conversion's launcher.
    """
    from tensorflow_datasets.core.example_parser import ExampleParserNp

    parser = ExampleParserNp(info.schema.features.get_serialized_info())
    names = info.class_names[:SAMPLE_CLASSES] or ["unlabeled"]
    found: dict[int, list[np.ndarray]] = {label: [] for label in range(len(names))}
    for record in itertools.islice(records, SAMPLE_SCAN):
        example = parser.parse_example(record)
        kept = found.get(example[schema.LABEL] if info.class_names else 0)  # unlabeled records: label -1
        if kept is not None and len(kept) < per_class:
            kept.append(_thumbnail(info, example[schema.IMAGE]))
            if all(len(kept) == per_class for kept in found.values()):
                break
    return figures.image_grid([(name, found[label]) for label, name in enumerate(names) if found[label]],
                              SAMPLE_SIZE)


def _thumbnail(info: metadata.DatasetInfo, image: Any) -> np.ndarray:
    """A stored image (encoded bytes, or raw pixels and shape) -> its central square at `SAMPLE_SIZE`, uint8
    [H, W, C]."""
    if info.schema.encoding == "raw":
        pixels = info.schema.features[schema.IMAGE].decode_example_np(image)
    else:
        pixels = np.asarray(Image.open(io.BytesIO(image)))
    picture = Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
    square = picture.crop(central_crop_box(picture.size, (1, 1))).resize((SAMPLE_SIZE, SAMPLE_SIZE), Image.BILINEAR)
    thumbnail = np.asarray(square)
    return thumbnail[..., None] if thumbnail.ndim == 2 else thumbnail
