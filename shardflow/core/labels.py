"""What a dataset's labels add up to, beyond records per class: for a multi-label dataset, how often each class
occurs and which occur together (the co-occurrence matrix, tallied from the records' label sets), and where labels
from a CSV file came from. The conversion tallies them; the dataset card and `shardflow inspect` show them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from shardflow.core import metadata

PAIRS_SHOWN = 10  # the most frequent pairs of classes named
MATRIX_CLASSES = 20  # the card draws the whole co-occurrence matrix up to this many classes


def tally(
    set_counts: Mapping[int, int], label_sets: Sequence[Sequence[int]], num_classes: int
) -> tuple[tuple[int, ...], ...]:
    """The co-occurrence matrix ([i][j]: records with classes i and j; [i][i]: with class i) of records counted
    per label set (`set_counts`: label set id -> records; `label_sets`: id -> class indices)."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for label_set, count in set_counts.items():
        classes = list(label_sets[label_set])
        matrix[np.ix_(classes, classes)] += count
    return tuple(tuple(row) for row in matrix.tolist())


def total(splits: Sequence[metadata.Split]) -> np.ndarray:
    """The co-occurrence matrix of several splits together."""
    return np.sum([np.array(split.cooccurrence, np.int64) for split in splits], axis=0)


def pairs(class_names: Sequence[str], matrix: np.ndarray, limit: int = PAIRS_SHOWN) -> list[tuple[str, str, int]]:
    """The `limit` most frequent pairs of different classes (a, b, records with both), most frequent first."""
    found = [
        (class_names[i], class_names[j], int(matrix[i][j]))
        for i in range(len(class_names))
        for j in range(i + 1, len(class_names))
        if matrix[i][j]
    ]
    return sorted(found, key=lambda pair: -pair[2])[:limit]


def source_sentence(source: metadata.LabelsFile, multi_label: bool) -> str:
    """Where a dataset's labels came from (`convert --labels`), what shape they have, and the rows left over."""
    columns = (
        f"label column {source.label_columns[0]!r}"
        if len(source.label_columns) == 1
        else f"{len(source.label_columns)} 0/1 columns, one per class"
    )
    split = f", tags split on {source.separator!r}" if source.separator else ""
    kind = "multi-label (each image any number of classes)" if multi_label else "one class per image"
    listed = f", listed in {metadata.LABELS_WITHOUT_IMAGES}" if source.without_images else ""
    return (
        f"labels from {source.path} (id column {source.id_column!r}, {columns}{split}; {kind}): {source.rows} "
        f"rows, {source.without_images} naming no image{listed}"
    )


def summary_lines(info: metadata.DatasetInfo) -> list[str]:
    """For a multi-label dataset: labels per image and the most frequent pairs of classes, over every split."""
    if not info.multi_label or not info.splits:
        return []
    matrix = total(list(info.splits.values()))
    per_image = np.trace(matrix) / max(1, info.num_records)
    found = pairs(info.class_names, matrix)
    return [
        f"labels per image: {per_image:.2f} on average",
        "classes most often together: " + (", ".join(f"{a} & {b} {n}" for a, b, n in found) or "none"),
    ]


def matrix_table(info: metadata.DatasetInfo) -> list[str]:
    """The co-occurrence matrix over every split as a Markdown table (up to MATRIX_CLASSES classes)."""
    if not info.multi_label or not info.splits or len(info.class_names) > MATRIX_CLASSES:
        return []
    matrix = total(list(info.splits.values()))
    names = info.class_names
    return ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"] + [
        f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |" for name, row in zip(names, matrix)
    ]
