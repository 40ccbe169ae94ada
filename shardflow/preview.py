"""`shardflow preview`: a picture of what the model will see, each image next to augmented versions of itself.

TensorFlow is imported when a grid is drawn, not with this module (the CLI reads `preview_grid`'s defaults).
"""
from __future__ import annotations

import os
from typing import Any

from PIL import Image, ImageDraw

from shardflow import metadata

CAPTION_HEIGHT = 16
GAP = 4


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
    rows, cols = len(batch), len(columns)
    cell = image_size + GAP
    grid = Image.new("RGB", (cols * cell + GAP, rows * (cell + CAPTION_HEIGHT) + GAP), "white")
    draw = ImageDraw.Draw(grid)
    for row in range(rows):
        label = int(labels[row])
        name = info.class_names[label] if 0 <= label < len(info.class_names) else "unlabeled"
        top = GAP + row * (cell + CAPTION_HEIGHT)
        draw.text((GAP, top), name + ("  (original, then augmented)" if params and row == 0 else ""), fill="black")
        for col, column in enumerate(columns):
            pixels = column[row]
            tile = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            grid.paste(tile, (GAP + col * cell, top + CAPTION_HEIGHT))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    grid.save(out)
    return out
