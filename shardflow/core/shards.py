"""A split's shards as the metadata records them, for every reader of a finished dataset: listed and checked
(they exist, at their recorded size) before they are read (`checked_shards`), read in their stored order
(`stored_records`), and checked byte by byte (`check_shard`: SHA-256, size, every record's TFRecord length and
data CRCs, the record count, the record index), which names a damaged shard for `shardflow verify` and for the
reader's errors (`damaged_shards`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Protocol

import tensorflow as tf

from shardflow.core import files, metadata, record_index
from shardflow.core.framing import FOOTER_BYTES, HEADER_BYTES, unframe

READ_BUFFER_BYTES = 8 * 2**20
CHUNK_RECORDS = 512  # records checked together: one parse, one parallel decode


@dataclasses.dataclass
class ShardReport:
    split: str
    filename: str
    records: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    old_index: bool = False  # a record index under its old name (`record_index.legacy_filename`) that matches
    damaged_kept: int = 0  # records listed in damaged_jpegs.jsonl (checked only when images are decoded)


class RecordCheck(Protocol):
    """What `check_shard` asks of a check of the records themselves (`shardflow.tools.verify`'s): which records
    damaged_jpegs.jsonl lists, by (shard, record index), with their warning; and for a chunk of records, each one's
    problem (None: none) and image/filename."""

    listed: dict[tuple[str, int], str]

    def __call__(self, records: list[bytes], listed: list[str | None]) -> list[tuple[str | None, str]]: ...


def stored_records(info: metadata.DatasetInfo, split: str) -> tf.data.Dataset:
    """A split's serialized records in their stored order, each shard checked first (see `checked_shards`)."""
    return tf.data.TFRecordDataset([path for path, _ in checked_shards(info, split)], buffer_size=READ_BUFFER_BYTES)


def checked_shards(info: metadata.DatasetInfo, split: str) -> list[tuple[str, int]]:
    """The split's (shard path, records), each shard checked to exist with the size the metadata records."""
    paths = []
    for shard in info.split(split).shards:
        path = files.join(info.data_dir, shard.filename)
        if not files.exists(path):
            raise metadata.DatasetError(f"{info.data_dir}: split {split!r}: shard {shard.filename} is missing")
        if files.size(path) != shard.num_bytes:
            raise metadata.DatasetError(
                f"{info.data_dir}: split {split!r}: shard {shard.filename} has {files.size(path)} bytes, "
                f"the metadata says {shard.num_bytes} (truncated or replaced); run `shardflow verify`"
            )
        paths.append((path, shard.num_records))
    return paths


def damaged_shards(data_dir: str, split: str) -> list[str]:
    """Descriptions of the shards of one split that do not match the metadata (size, checksum, framing)."""
    info = metadata.read(data_dir)
    reports = [check_shard(info, split, shard) for shard in info.split(split).shards]
    return [f"{r.filename}: {'; '.join(r.problems)}" for r in reports if r.problems]


def check_shard(
    info: metadata.DatasetInfo,
    split: str,
    shard: metadata.Shard,
    check: RecordCheck | None = None,
    indexes: bool = False,
) -> ShardReport:
    """One shard against its metadata; with `check`, every record's fields and image too; with `indexes`, its
    record indexes."""
    report = ShardReport(split, shard.filename)
    path = files.join(info.data_dir, shard.filename)
    if not files.exists(path):
        report.problems.append("missing")
        return report
    digest = hashlib.sha256()
    framed: list[int] = []
    chunk: list[bytes] = []
    try:
        for record in _records(path, digest):
            report.records += 1
            framed.append(len(record) + HEADER_BYTES + FOOTER_BYTES)
            if check is not None:
                chunk.append(record)
                if len(chunk) == CHUNK_RECORDS:
                    _check_chunk(report, check, chunk, report.records - len(chunk))
                    chunk = []
    except ValueError as error:
        report.problems.append(str(error))
        return report
    if check is not None and chunk:
        _check_chunk(report, check, chunk, report.records - len(chunk))
    size = sum(framed)
    if size != shard.num_bytes:
        report.problems.append(f"{size} bytes, the metadata says {shard.num_bytes}")
    if digest.hexdigest() != shard.sha256:
        report.problems.append("SHA-256 checksum differs from the metadata")
    if report.records != shard.num_records:
        report.problems.append(f"{report.records} records, the metadata says {shard.num_records}")
    if indexes:
        _check_indexes(report, info.data_dir, framed)
    return report


def _check_chunk(report: ShardReport, check: RecordCheck, chunk: list[bytes], first: int) -> None:
    """Check the records `first`, `first` + 1, ... of the report's shard, noting their problems."""
    listed = [check.listed.get((report.filename, first + i)) for i in range(len(chunk))]
    report.damaged_kept += sum(warning is not None for warning in listed)
    for index, (problem, filename) in enumerate(check(chunk, listed), first):
        if problem:
            report.problems.append(f"record {index}" + (f" ({filename})" if filename else "") + f": {problem}")


def _check_indexes(report: ShardReport, data_dir: str, framed: list[int]) -> None:
    """The shard's record indexes, where it has any (under the current name, or the old one), against its records'
    framed lengths."""
    current = record_index.index_filename(report.filename)
    for name in (current, record_index.legacy_filename(report.filename)):
        path = files.join(data_dir, name)
        if not files.exists(path):
            continue
        with files.open_binary(path) as f:
            mismatch = record_index.mismatch(f.read().decode(errors="replace"), framed)
        if mismatch:
            report.problems.append(
                f"its record index {name} does not match it ({mismatch}); delete the index: it "
                "is rebuilt from the shard on first use"
            )
        elif name != current:
            report.old_index = True


def _records(path: str, digest) -> Iterator[bytes]:
    """The records of a TFRecord file, checking both CRCs of each; `digest` sees every byte read."""
    with files.open_binary(path) as f:
        yield from unframe(f, digest)
