"""Pictures of a dataset's stored images, drawn from its records without TensorFlow or Beam: the dataset card's
samples (a few stored images per class) and its groups of duplicates side by side (the card's duplicates.png,
`shardflow inspect --duplicates`). The conversion draws them in its launcher, the tools from a finished dataset
(`shardflow.tools.preview`).

matplotlib is imported when a picture is drawn, not with this module.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from shardflow.core import figures, files, framing, metadata, record_order, schema
from shardflow.core.images import central_crop_box

SAMPLE_SIZE = 96  # pixels of each sample in the card's grid (centre-cropped square thumbnails)
SAMPLE_CLASSES = 20  # the card's grid shows the first classes only: one row each
SAMPLE_SCAN = 5000  # records read at most to find them (a rare class may show fewer images, or none)
DUPLICATE_TILE = 112  # pixels of each cell in the picture of duplicates (the whole image, aspect ratio kept)
DUPLICATE_GROUPS = 20  # groups of duplicates drawn, leaks first (`shardflow inspect --duplicates --groups N`)
DUPLICATE_MEMBERS = 8  # images drawn per group at most
DUPLICATE_COLUMNS = 3  # cells per row at least, so that a row's caption fits


def class_samples(info: metadata.DatasetInfo, records: Iterable[bytes], per_class: int = 4) -> bytes:
    """PNG bytes: a row of `per_class` images for each class (the first `SAMPLE_CLASSES`; a multi-label record in
    the row of each of its classes), the first found among `records` (serialized records of the dataset), reading
    at most `SAMPLE_SCAN` of them.

    Parsed with NumPy and decoded with Pillow: no TensorFlow import (seconds) in the conversion's launcher.
    """
    parser = _parser(info)
    names = info.class_names[:SAMPLE_CLASSES] or [metadata.UNLABELED_CLASS]
    found: dict[int, list[np.ndarray]] = {label: [] for label in range(len(names))}
    for record in itertools.islice(records, SAMPLE_SCAN):
        example = parser.parse_example(record)
        label = example[schema.LABEL]  # a multi-label record's classes: each row may show it
        classes = [int(i) for i in label] if info.multi_label else [int(label) if info.class_names else 0]
        rows = [found[i] for i in classes if i in found and len(found[i]) < per_class]  # unlabeled: label -1
        if rows:
            thumbnail = _thumbnail(info, example[schema.IMAGE])
            for kept in rows:
                kept.append(thumbnail)
            if all(len(kept) == per_class for kept in found.values()):
                break
    return figures.image_grid([(name, found[label]) for label, name in enumerate(names) if found[label]], SAMPLE_SIZE)


def duplicates_picture(
    info: metadata.DatasetInfo,
    groups: Sequence[metadata.DuplicateGroup],
    limit: int = DUPLICATE_GROUPS,
    open_file: files.Opener = files.open_binary,
) -> bytes:
    """PNG bytes: one row per group of duplicates (`groups` as duplicates.jsonl lists them; leaks first, then
    those whose labels differ, at most `limit`), captioned with its line in the file, its kind and marks, its
    images side by side as stored, each labelled with its split, class and path, the one --dedupe keeps first.
    The images are found by path in the shards of their splits (opened with `open_file`): by bisection
    (`record_order`), or for a dataset without record indexes by reading its splits until every one is found; one
    that is not is an empty cell marked "not in shards"."""
    numbered = sorted(enumerate(groups, 1), key=lambda item: (not item[1].leak, not item[1].labels_differ))[:limit]
    shown = {line: group.members[:DUPLICATE_MEMBERS] for line, group in numbered}
    stored = _stored_by_path(info, [member for members in shown.values() for member in members], open_file)
    parser = _parser(info)
    found = {path: _whole(info, parser.parse_example(r)[schema.IMAGE], DUPLICATE_TILE) for path, r in stored.items()}
    rows, labels = [], []
    for line, group in numbered:
        marks = [
            mark
            for mark, applies in (
                ("LEAK", group.leak),
                ("LABELS DIFFER", group.labels_differ),
                (f"{len(group.members) - DUPLICATE_MEMBERS} more not drawn", len(group.members) > DUPLICATE_MEMBERS),
            )
            if applies
        ]
        rows.append((" · ".join([f"line {line}", group.kind, *marks]), [found.get(m.path) for m in shown[line]]))
        labels.append(
            [_duplicate_label(member, index == 0, member.path in found) for index, member in enumerate(shown[line])]
        )
    return figures.image_grid(rows, DUPLICATE_TILE, labels, min_columns=DUPLICATE_COLUMNS)


def stored_records(
    info: metadata.DatasetInfo, splits: Iterable[str], open_file: files.Opener = files.open_binary
) -> Iterator[bytes]:
    """The serialized records of `splits`, shard after shard (`open_file`: Beam's `FileSystems.open` in the
    conversion's launcher; the reader's files otherwise)."""
    for split in splits:
        for shard in info.split(split).shards:
            with open_file(files.join(info.data_dir, shard.filename)) as f:
                yield from framing.unframe(f)


def _stored_by_path(
    info: metadata.DatasetInfo, members: Sequence[metadata.DuplicateMember], open_file: files.Opener
) -> dict[str, bytes]:
    """The serialized records of `members` that are stored, by path: found by bisection (`record_order`), or in a
    split without record indexes by reading it until they are."""
    stored: dict[str, bytes] = {}
    for split in metadata.split_names({member.split for member in members}):
        paths = {member.path for member in members if member.split == split}
        records = record_order.find_records(info, paths, split, open_file)
        if records is None:
            records = {}
            for record in stored_records(info, [split], open_file):
                path = schema.record_filename(record).decode("utf-8", "surrogateescape")
                if path in paths:
                    records[path] = record
                    if len(records) == len(paths):
                        break
        stored |= records
    return stored


def _duplicate_label(member: metadata.DuplicateMember, kept: bool, found: bool) -> str:
    """Three lines under an image of a group: its split (and whether --dedupe keeps it), class and path."""
    chars = DUPLICATE_TILE // 7  # of 8-point text in a cell
    path = member.path if len(member.path) <= chars else "…" + member.path[1 - chars :]
    return "\n".join(
        (member.split + (" · kept" if kept else ""), member.label[:chars], path if found else "not in shards")
    )


def _parser(info: metadata.DatasetInfo) -> Any:
    """TFDS's NumPy parser of the dataset's records: no TensorFlow import."""
    from tensorflow_datasets.core.example_parser import ExampleParserNp

    return ExampleParserNp(info.schema.features.get_serialized_info())


def _decoded(info: metadata.DatasetInfo, image: Any) -> Image.Image:
    """A stored image (encoded bytes, or raw pixels and shape) as a Pillow image."""
    if info.schema.encoding == "raw":
        pixels = info.schema.features[schema.IMAGE].decode_example_np(image)
    else:
        pixels = np.asarray(Image.open(io.BytesIO(image)))
    return Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)


def _array(picture: Image.Image) -> np.ndarray:
    """uint8 [H, W, C]."""
    pixels = np.asarray(picture)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _thumbnail(info: metadata.DatasetInfo, image: Any) -> np.ndarray:
    """A stored image -> its central square at `SAMPLE_SIZE`, uint8 [H, W, C]."""
    picture = _decoded(info, image)
    return _array(
        picture.crop(central_crop_box(picture.size, (1, 1))).resize(
            (SAMPLE_SIZE, SAMPLE_SIZE), Image.Resampling.BILINEAR
        )
    )


def _whole(info: metadata.DatasetInfo, image: Any, side: int) -> np.ndarray:
    """A stored image, whole, shrunk to fit `side` x `side` pixels when larger, uint8 [H, W, C]."""
    picture = _decoded(info, image)
    picture.thumbnail((side, side))
    return _array(picture)
