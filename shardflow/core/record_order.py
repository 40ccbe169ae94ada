"""The order of a split's records in its shards, and finding a record by its path in that order.

The conversion stores each split's records in (path hash, path) order (`stable_hash` of the path's UTF-8 bytes,
surrogate-escaped, then those bytes), shard after shard; each shard's record index (`record_index`) says where each
record starts. A record is found by bisection: about log2(records) reads of one record each, where reading the
split to find it reads every record. Needs neither TensorFlow nor Beam.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from typing import IO

from shardflow.core import files, framing, metadata, record_index, schema


def path_bytes(path: str | bytes) -> bytes:
    """A relative path as records hold it and sort by: UTF-8, surrogate-escaped (a non-UTF-8 name kept as it is)."""
    return path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")


def stable_hash(path: str | bytes) -> int:
    """A 64-bit hash of a relative path (str, or its UTF-8 bytes), identical on every machine and Python version."""
    return int.from_bytes(hashlib.blake2b(path_bytes(path), digest_size=8).digest(), "big")


def order_key(path: str | bytes) -> tuple[int, bytes]:
    """Where a record of this path sorts among its split's records."""
    data = path_bytes(path)
    return stable_hash(data), data


def find_records(
    info: metadata.DatasetInfo, paths: Iterable[str], split: str, open_file: files.Opener = files.open_binary
) -> dict[str, bytes] | None:
    """The serialized records of those of `paths` that are in `split` (`open_file` opens its shards and their record
    indexes); None when a shard has no record index (a dataset converted without them), for the caller to read the
    split instead. Every conversion that writes record indexes stores its records in this order."""
    try:
        split_records = _SplitRecords(info, split, open_file)
    except (OSError, ValueError):
        return None
    try:
        found = {}
        for path in paths:
            key = order_key(path)
            low, high = 0, len(split_records)
            while low < high:
                middle = (low + high) // 2
                if split_records.key(middle) < key:
                    low = middle + 1
                else:
                    high = middle
            if low < len(split_records) and split_records.key(low) == key:
                found[path] = split_records.record(low)
        return found
    finally:
        split_records.close()


class _SplitRecords:
    """A split's records by their number in the split (shard after shard), read one at a time and kept once read."""

    def __init__(self, info: metadata.DatasetInfo, split: str, open_file: files.Opener):
        self._starts: list[tuple[int, str, list[tuple[int, int]]]] = []  # (first number, shard path, index)
        self._count = 0
        for shard in info.split(split).shards:
            with open_file(files.join(info.data_dir, record_index.index_filename(shard.filename))) as f:
                index = record_index.entries(f.read())
            self._starts.append((self._count, files.join(info.data_dir, shard.filename), index))
            self._count += len(index)
        self._open: dict[str, IO[bytes]] = {}
        self._records: dict[int, bytes] = {}
        self._open_file = open_file

    def __len__(self) -> int:
        return self._count

    def record(self, number: int) -> bytes:
        if number not in self._records:
            first, path, index = next(start for start in reversed(self._starts) if start[0] <= number)
            offset, length = index[number - first]
            if path not in self._open:
                self._open[path] = self._open_file(path)
            shard = self._open[path]
            shard.seek(offset)
            self._records[number] = next(framing.unframe(io.BytesIO(shard.read(length))))
        return self._records[number]

    def key(self, number: int) -> tuple[int, bytes]:
        return order_key(schema.record_filename(self.record(number)))

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
