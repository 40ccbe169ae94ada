"""Prepared records in column batches: where each record's framed bytes sit in a spill file, plus its statistics.

The job moves records between stages a batch at a time (one batch per read task and split), not one element
per record: Beam's cost per element exceeds the work per image, and columns keep what the grouping stages hold
to a few hundred bytes per record (most of it the duplicate keys' thumbnails).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.recfunctions import repack_fields

from shardflow.core.duplicates import COLOUR_CELLS, STRUCTURE_CELLS, ImageHashes
from shardflow.core.images import ImageStats
from shardflow.core.metadata import SIZE_BINS

FIXED_POINT_BITS = 32  # the pixel sums' fraction bits when summed exactly (`partial_statistics`)


def row_dtype(channels: int) -> np.dtype:
    """One record's columns: sort key, label, location in its spill file, what statistics need, whether it is a
    damaged JPEG kept by --keep-damaged-jpegs, and the image's duplicate keys (`duplicates.ImageHashes`)."""
    return np.dtype(
        [
            ("hash", "<u8"),
            ("label", "<i8"),
            ("spill", "<i4"),
            ("offset", "<i8"),
            ("length", "<i8"),
            ("width", "<i8"),
            ("height", "<i8"),
            ("passthrough", "?"),
            ("damaged", "?"),
            ("channel_sum", "<f8", (channels,)),
            ("channel_sumsq", "<f8", (channels,)),
            ("exact", "V16"),
            ("perceptual", "<u8"),
            ("colour", f"V{3 * COLOUR_CELLS**2}"),
            ("structure", f"V{STRUCTURE_CELLS**2}"),
        ]
    )


def row(
    path_hash: int, label: int, offset: int, length: int, stats: ImageStats, hashes: ImageHashes, damaged: bool
) -> tuple:
    """The columns of one record appended at `offset` of its batch's (only) spill file."""
    return (
        path_hash,
        label,
        0,
        offset,
        length,
        stats.width,
        stats.height,
        stats.passthrough,
        damaged,
        stats.channel_sum,
        stats.channel_sumsq,
        *hashes,
    )


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
        """Indices by (path hash, path), whichever workers produced the records: the order shards store
        (`record_order.order_key`, by which readers find a record)."""
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


def without_duplicate_keys(batch: RecordBatch) -> RecordBatch:
    """The batch without the duplicate keys' columns (most of its bytes): what planning and writing shards need."""
    columns = [name for name in batch.rows.dtype.names or () if name not in ImageHashes._fields]
    return RecordBatch(batch.split, batch.spills, batch.paths, repack_fields(batch.rows[columns]))


def partial_statistics(batch: RecordBatch) -> dict[str, Any]:
    """What `split_statistics` needs of some of a split's records, mergeable (`merge_statistics`) in any order:
    counts, exact pixel sums (integers held in float64) and the size histogram."""
    rows = batch.rows
    sides = np.maximum(rows["width"], rows["height"])
    return {
        "num_examples": len(batch),
        "label_counts": Counter(rows["label"].tolist()),
        "pixels": int((rows["width"] * rows["height"]).sum()),
        "channel_sum": _exact_sums(rows["channel_sum"]),
        "channel_sumsq": _exact_sums(rows["channel_sumsq"]),
        "size_histogram": np.bincount(np.searchsorted(SIZE_BINS, sides, side="right"), minlength=len(SIZE_BINS) + 1),
        "width_range": (int(rows["width"].min()), int(rows["width"].max())),
        "height_range": (int(rows["height"].min()), int(rows["height"].max())),
        "passthrough": int(rows["passthrough"].sum()),
    }


def _exact_sums(values: np.ndarray) -> list[int]:
    """Per column, the sum of `values` in fixed point (units of 2**-32, each value rounded once) as Python ints:
    sums of float64 depend on their order; these do not, however the records are split among workers."""
    return [sum(map(int, np.round(column * 2.0**FIXED_POINT_BITS).tolist())) for column in values.T]


def merge_statistics(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two `partial_statistics` as one."""
    merged = {
        key: a[key] + b[key] for key in ("num_examples", "label_counts", "pixels", "size_histogram", "passthrough")
    }
    for key in ("channel_sum", "channel_sumsq"):
        merged[key] = [x + y for x, y in zip(a[key], b[key])]
    for key in ("width_range", "height_range"):
        merged[key] = (min(a[key][0], b[key][0]), max(a[key][1], b[key][1]))
    return merged


def split_statistics(split: str, partials: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A split's class counts, per-channel mean/std over all pixels and image-size histogram, from the
    `partial_statistics` of all its records (merged here: `merge_statistics`)."""
    partial = functools.reduce(merge_statistics, partials)
    total = max(1, partial["pixels"])
    mean = np.array([s / 2**FIXED_POINT_BITS for s in partial["channel_sum"]]) / total
    variance = np.array([s / 2**FIXED_POINT_BITS for s in partial["channel_sumsq"]]) / total - mean**2
    return {
        "split": split,
        "num_examples": partial["num_examples"],
        "label_counts": dict(sorted(partial["label_counts"].items())),
        "mean": mean.tolist(),
        "std": np.sqrt(np.maximum(variance, 0)).tolist(),
        "size_histogram": partial["size_histogram"].tolist(),
        "width_range": list(partial["width_range"]),
        "height_range": list(partial["height_range"]),
        "passthrough": partial["passthrough"],
    }
