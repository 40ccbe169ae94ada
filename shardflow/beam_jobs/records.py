"""Prepared records in column batches: where each record's framed bytes sit in a spill file, plus its statistics.

The job moves records between stages a batch at a time (one batch per read task and split), not one element
per record: Beam's cost per element exceeds the work per image, and columns keep what the grouping stages hold
to a few hundred bytes per record (most of it the duplicate keys' thumbnails).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from shardflow.duplicates import COLOUR_CELLS, STRUCTURE_CELLS, ImageHashes
from shardflow.images import ImageStats
from shardflow.metadata import SIZE_BINS


def row_dtype(channels: int) -> np.dtype:
    """One record's columns: sort key, label, location in its spill file, what statistics need, whether it is a
    damaged JPEG kept by --keep-damaged-jpegs, and the image's duplicate keys (`duplicates.ImageHashes`)."""
    return np.dtype([
        ("hash", "<u8"), ("label", "<i8"), ("spill", "<i4"), ("offset", "<i8"), ("length", "<i8"),
        ("width", "<i8"), ("height", "<i8"), ("passthrough", "?"), ("damaged", "?"),
        ("channel_sum", "<f8", (channels,)), ("channel_sumsq", "<f8", (channels,)),
        ("exact", "V16"), ("perceptual", "<u8"), ("colour", f"V{3 * COLOUR_CELLS ** 2}"),
        ("structure", f"V{STRUCTURE_CELLS ** 2}"),
    ])


def row(path_hash: int, label: int, offset: int, length: int, stats: ImageStats, hashes: ImageHashes,
        damaged: bool) -> tuple:
    """The columns of one record appended at `offset` of its batch's (only) spill file."""
    return (path_hash, label, 0, offset, length, stats.width, stats.height, stats.passthrough, damaged,
            stats.channel_sum, stats.channel_sumsq, *hashes)


class RecordBatch(NamedTuple):
    """Records of one split (None until exact counts assign it): `paths[i]` is described by `rows[i]`, whose
    `spill` column indexes `spills`."""

    split: str | None
    spills: tuple[str, ...]
    paths: tuple[bytes, ...]  # UTF-8, surrogate-escaped: Beam's str coder refuses the surrogates of non-UTF-8 names
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, indices: np.ndarray | slice, split: str | None = None) -> RecordBatch:
        """The records at `indices`, in that order, keeping only the spill files they use."""
        rows = self.rows[indices].copy()
        used, rows["spill"] = np.unique(rows["spill"], return_inverse=True)
        paths = tuple(np.asarray(self.paths, dtype=object)[indices]) if len(self.paths) else ()
        return RecordBatch(split or self.split, tuple(self.spills[i] for i in used), paths, rows)

    def hash_order(self) -> np.ndarray:
        """Indices by (path hash, path): the same order whichever workers produced the records."""
        hashes = self.rows["hash"].tolist()
        return np.array(sorted(range(len(self)), key=lambda i: (hashes[i], self.paths[i])), dtype=np.int64)


def concat(batches: Sequence[RecordBatch], split: str | None = None) -> RecordBatch:
    """One batch of all records in `batches` (in the order given)."""
    spills: dict[str, int] = {}
    parts = []
    for batch in batches:
        index = np.array([spills.setdefault(s, len(spills)) for s in batch.spills], dtype=np.int32)
        rows = batch.rows.copy()
        rows["spill"] = index[rows["spill"]] if len(rows) else rows["spill"]
        parts.append(rows)
    paths = tuple(p for batch in batches for p in batch.paths)
    return RecordBatch(split, tuple(spills), paths, np.concatenate(parts))


def split_statistics(split: str, batch: RecordBatch) -> dict[str, Any]:
    """Class counts, per-channel mean/std over all pixels, and the image-size histogram."""
    rows = batch.rows
    pixels = rows["width"] * rows["height"]
    total = max(1, int(pixels.sum()))
    mean = rows["channel_sum"].sum(axis=0) / total
    variance = rows["channel_sumsq"].sum(axis=0) / total - mean**2
    sides = np.maximum(rows["width"], rows["height"])
    return {
        "split": split,
        "num_examples": len(batch),
        "label_counts": dict(sorted(Counter(rows["label"].tolist()).items())),
        "mean": mean.tolist(),
        "std": np.sqrt(np.maximum(variance, 0)).tolist(),
        "size_histogram": np.bincount(np.searchsorted(SIZE_BINS, sides, side="right"),
                                      minlength=len(SIZE_BINS) + 1).tolist(),
        "width_range": [int(rows["width"].min()), int(rows["width"].max())],
        "height_range": [int(rows["height"].min()), int(rows["height"].max())],
        "passthrough": int(rows["passthrough"].sum()),
    }
