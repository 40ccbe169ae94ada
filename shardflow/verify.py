"""`shardflow verify`: check a converted dataset end to end, and name every shard that is not as recorded.

Per shard (in parallel threads, streaming): it exists, its size and SHA-256 match the metadata, every record's
TFRecord length and data CRCs hold, the record count matches, every record parses as a `tf.train.Example` with
the schema's parse spec and its image decodes with the reader's own decoder. For the dataset: the invariants of
its metadata (inputs == records + rejects + unselected), the rejects list and the groups of duplicates.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
from collections.abc import Iterator

import tensorflow as tf

from shardflow import files, metadata, schema
from shardflow.framing import unframe
from shardflow.pipeline.decoder import Decoder

READ_CHUNK = 8 * 2**20


@dataclasses.dataclass
class ShardReport:
    split: str
    filename: str
    records: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class VerifyReport:
    data_dir: str
    shards: list[ShardReport]
    problems: list[str]  # dataset-level

    @property
    def ok(self) -> bool:
        return not self.problems and all(not s.problems for s in self.shards)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.shards)


def verify(data_dir: str, *, decode_images: bool = True, workers: int | None = None) -> VerifyReport:
    """Check every shard of `data_dir` against its metadata; see the module docstring."""
    info = metadata.read(data_dir)
    check = _RecordCheck(info) if decode_images else None
    jobs = [(split.name, shard) for split in info.splits.values() for shard in split.shards]
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        shards = list(pool.map(lambda job: check_shard(info, *job, check=check), jobs))
    return VerifyReport(data_dir, shards, _dataset_problems(info))


def damaged_shards(data_dir: str, split: str) -> list[str]:
    """Descriptions of the shards of one split that do not match the metadata (size, checksum, framing)."""
    info = metadata.read(data_dir)
    reports = [check_shard(info, split, shard) for shard in info.split(split).shards]
    return [f"{r.filename}: {'; '.join(r.problems)}" for r in reports if r.problems]


def check_shard(info: metadata.DatasetInfo, split: str, shard: metadata.Shard,
                check: _RecordCheck | None = None) -> ShardReport:
    """One shard against its metadata; with `check`, every record's fields and image too."""
    report = ShardReport(split, shard.filename)
    path = files.join(info.data_dir, shard.filename)
    if not files.exists(path):
        report.problems.append("missing")
        return report
    digest = hashlib.sha256()
    size = 0
    try:
        for record in _records(path, digest):
            report.records += 1
            size += len(record) + 16
            if check is not None:
                problem = check(record)
                if problem:
                    report.problems.append(f"record {report.records - 1}: {problem}")
    except ValueError as error:
        report.problems.append(str(error))
        return report
    if size != shard.num_bytes:
        report.problems.append(f"{size} bytes, the metadata says {shard.num_bytes}")
    if digest.hexdigest() != shard.sha256:
        report.problems.append("SHA-256 checksum differs from the metadata")
    if report.records != shard.num_records:
        report.problems.append(f"{report.records} records, the metadata says {shard.num_records}")
    return report


def _records(path: str, digest) -> Iterator[bytes]:
    """The records of a TFRecord file, checking both CRCs of each; `digest` sees every byte read."""
    with files.open_binary(path) as f:
        yield from unframe(f, digest)


class _RecordCheck:
    """A record's problem, if any: it parses with the schema's spec, its label is in range, and its image decodes
    with the reader's decoder at full size (at the stored size, for a fixed-size dataset)."""

    def __init__(self, info: metadata.DatasetInfo):
        decoder = Decoder(info.schema)
        raw = info.schema.encoding == "raw"
        self._classes, self._stored_size = len(info.class_names), info.stored_size

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def parse(record):
            fields = decoder.parse(record)
            return fields.label, fields.data, fields.shape if raw else tf.zeros([3], tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([3], tf.int64)])
        def decode(data, shape):
            return tf.shape(decoder.image(data, shape if raw else None))

        self._parse, self._decode = parse, decode

    def __call__(self, record: bytes) -> str | None:
        try:
            label, data, shape = self._parse(tf.constant(record))
        except tf.errors.OpError as error:
            return f"not a record of this dataset ({_reason(error)})"
        if not (int(label) == schema.UNLABELED or 0 <= int(label) < self._classes):
            return f"label {int(label)} out of range"
        try:
            height, width, _ = self._decode(data, shape).numpy().tolist()
        except tf.errors.OpError as error:
            return f"image does not decode ({_reason(error)})"
        if self._stored_size not in (None, (height, width)):
            stored = "x".join(map(str, self._stored_size))
            return f"image is {height}x{width}, not the dataset's stored size {stored} (HxW)"
        return None


def _reason(error: tf.errors.OpError) -> str:
    """The op's own words from a graph error (without "Graph execution error", the Python stack, node names)."""
    lines = [line for line in error.message.splitlines() if line and not line[0].isspace()
             and not line.startswith(("Graph execution error", "Detected at node"))]
    return lines[0] if lines else error.message


def _dataset_problems(info: metadata.DatasetInfo) -> list[str]:
    problems = info.problems()
    try:
        rejects = metadata.read_rejects(info.data_dir)
    except OSError:
        return problems + [f"{metadata.REJECTS} is missing"]
    if len(rejects) != info.num_rejected:
        problems.append(f"{metadata.REJECTS} lists {len(rejects)} files, the metadata says {info.num_rejected}")
    return problems + _duplicates_problems(info)


def _duplicates_problems(info: metadata.DatasetInfo) -> list[str]:
    """duplicates.jsonl against the counts in the metadata (datasets whose shardflow wrote it)."""
    if not (info.duplicates and info.duplicates.listed):
        return []
    try:
        groups = metadata.read_duplicates(info.data_dir)
    except metadata.DatasetError:
        return [f"{metadata.DUPLICATES} is missing"]
    near = info.duplicates.near
    listed = (len(groups), sum(g.leak for g in groups), sum(g.labels_differ for g in groups))
    if listed != (near.groups, near.leaks, near.labels_differ):
        return [f"{metadata.DUPLICATES} lists {listed[0]} groups ({listed[1]} leaking, {listed[2]} whose labels "
                f"differ), the metadata says {near.groups} ({near.leaks}, {near.labels_differ})"]
    return []
