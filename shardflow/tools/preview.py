"""Pictures of a finished dataset: `shardflow preview` (what the model will see, each image next to augmented
versions of itself) and `shardflow inspect --duplicates` (its groups of duplicates side by side, drawn by
`shardflow.core.pictures` as the dataset card's are).

TensorFlow and matplotlib are imported when a picture is drawn, not with this module (the CLI reads
`preview_grid`'s defaults).
"""

from __future__ import annotations

import os
from typing import Any

from shardflow.core import figures, metadata
from shardflow.core.pictures import DUPLICATE_GROUPS, duplicates_picture


def preview_grid(
    data_dir: str,
    out: str,
    *,
    split: str = metadata.TRAIN,
    augment: str | dict[str, Any] | None = None,
    images: int = 4,
    variants: int = 5,
    image_size: int = 150,
    seed: int = 0,
) -> str:
    """Write a PNG grid to `out`: one row per image, its class name above; with `augment`, the original then
    `variants` augmented versions (like the augmented-cat figure of Deep Learning with Python)."""
    if images < 1 or variants < 0 or image_size < 8:
        raise ValueError(
            f"`images` must be >= 1, `variants` >= 0 and `image_size` >= 8, got {images}, {variants} and {image_size}"
        )
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
        name = metadata.label_name(info.class_names, label.nonzero()[0] if info.multi_label else label)
        rows.append(
            (
                name + ("  (original, then augmented)" if params and row == 0 else ""),
                [column[row] for column in columns],
            )
        )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(figures.image_grid(rows, image_size))
    return out


def draw_duplicates(data_dir: str, out: str, limit: int = DUPLICATE_GROUPS) -> str:
    """Write `duplicates_picture` of a dataset's groups of duplicates (duplicates.jsonl) to the PNG `out`."""
    groups = metadata.read_duplicates(data_dir)
    if not groups:
        raise ValueError(f"{data_dir}: no duplicates to draw ({metadata.DUPLICATES} lists no group)")
    picture = duplicates_picture(metadata.read(data_dir), groups, limit)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(picture)
    return out
