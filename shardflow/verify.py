"""`shardflow verify`: check a converted dataset end to end, and name every shard that is not as recorded.

Per shard (in parallel threads, streaming): it exists, its size and SHA-256 match the metadata, every record's
TFRecord length and data CRCs hold, the record count matches, every record parses as a `tf.train.Example` with
the schema's keys and its image decodes with `tf.io.decode_image`. For the dataset: inputs == records + rejects.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import struct
from collections.abc import Iterator

import tensorflow as tf
from apache_beam.io.filesystems import FileSystems

from shardflow import metadata, schema
from shardflow.framing import masked_crc

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
    meta = metadata.read(data_dir)
    jobs = [(split, shard) for split, info in meta.splits.items() for shard in info["shards"]]
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        shards = list(pool.map(lambda job: check_shard(meta, *job, decode_images=decode_images), jobs))
    return VerifyReport(data_dir, shards, _dataset_problems(meta))


def damaged_shards(data_dir: str, split: str) -> list[str]:
    """Descriptions of the shards of one split that do not match the metadata (size, checksum, framing)."""
    meta = metadata.read(data_dir)
    reports = [check_shard(meta, split, shard, decode_images=False) for shard in meta.split(split)["shards"]]
    return [f"{r.filename}: {'; '.join(r.problems)}" for r in reports if r.problems]


def check_shard(meta: metadata.DatasetMetadata, split: str, shard: dict, *, decode_images: bool) -> ShardReport:
    report = ShardReport(split, shard["filename"])
    path = FileSystems.join(meta.data_dir, shard["filename"])
    if not FileSystems.exists(path):
        report.problems.append("missing")
        return report
    digest = hashlib.sha256()
    size = 0
    try:
        for record in _records(path, digest):
            report.records += 1
            size += len(record) + 16
            if decode_images:
                _check_record(record, meta, report)
    except ValueError as error:
        report.problems.append(str(error))
        return report
    if size != shard["num_bytes"]:
        report.problems.append(f"{size} bytes, the metadata says {shard['num_bytes']}")
    if digest.hexdigest() != shard["sha256"]:
        report.problems.append("SHA-256 checksum differs from the metadata")
    if report.records != shard["num_records"]:
        report.problems.append(f"{report.records} records, the metadata says {shard['num_records']}")
    return report


def _records(path: str, digest) -> Iterator[bytes]:
    """The records of a TFRecord file, checking both CRCs of each; `digest` sees every byte read."""
    with FileSystems.open(path) as f:
        index = 0
        while True:
            header = f.read(12)
            digest.update(header)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"truncated after record {index}: partial record header")
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
                raise ValueError(f"record {index}: length CRC mismatch (corrupted header)")
            body = f.read(length + 4)
            digest.update(body)
            if len(body) < length + 4:
                raise ValueError(f"truncated in record {index}")
            data = body[:length]
            if struct.unpack("<I", body[length:])[0] != masked_crc(data):
                raise ValueError(f"record {index}: data CRC mismatch (corrupted bytes)")
            yield data
            index += 1


def _check_record(record: bytes, meta: metadata.DatasetMetadata, report: ShardReport) -> None:
    where = f"record {report.records - 1}"
    try:
        features = tf.train.Example.FromString(record).features.feature
    except Exception as error:  # protobuf's DecodeError and friends
        report.problems.append(f"{where}: not a tf.train.Example ({error})")
        return
    missing = [k for k in (schema.LABEL, schema.FILENAME) if k not in features]
    image_key = f"{schema.IMAGE}/value" if meta.image_format == "raw" else schema.IMAGE
    if image_key not in features:
        missing.append(image_key)
    if missing:
        report.problems.append(f"{where}: missing {', '.join(missing)}")
        return
    label = features[schema.LABEL].int64_list.value[0]
    if not (label == schema.UNLABELED or 0 <= label < len(meta.class_names)):
        report.problems.append(f"{where}: label {label} out of range")
    if meta.image_format == "raw":
        shape = list(features[f"{schema.IMAGE}/shape"].int64_list.value)
        data = features[image_key].bytes_list.value[0]
        if len(shape) != 3 or shape[0] * shape[1] * shape[2] != len(data):
            report.problems.append(f"{where}: raw image of {len(data)} bytes does not fit its shape {shape}")
        return
    try:
        tf.io.decode_image(features[image_key].bytes_list.value[0], channels=meta.channels, expand_animations=False)
    except tf.errors.OpError as error:
        report.problems.append(f"{where}: image does not decode ({error.message.splitlines()[0]})")


def _dataset_problems(meta: metadata.DatasetMetadata) -> list[str]:
    info = meta.info
    problems = []
    if info["num_inputs"] != info["num_records"] + info["num_rejected"] + info.get("num_unselected", 0):
        problems.append(f"inputs ({info['num_inputs']}) != records ({info['num_records']}) + rejects "
                        f"({info['num_rejected']}) + unselected ({info.get('num_unselected', 0)})")
    if sum(s["num_examples"] for s in meta.splits.values()) != info["num_records"]:
        problems.append("the splits' record counts do not add up to num_records")
    try:
        rejects = metadata.read_rejects(meta.data_dir)
    except OSError:
        return problems + [f"{metadata.REJECTS} is missing"]
    if len(rejects) != info["num_rejected"]:
        problems.append(f"{metadata.REJECTS} lists {len(rejects)} files, the metadata says {info['num_rejected']}")
    return problems
