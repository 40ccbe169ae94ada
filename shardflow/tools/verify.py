"""`shardflow verify`: check a converted dataset end to end, and name every shard that is not as recorded.

Per shard (in parallel threads, streaming): it exists, its size and SHA-256 match the metadata, every record's
TFRecord length and data CRCs hold, the record count matches, every record parses as a `tf.train.Example` with
the schema's parse spec and its image decodes with the reader's own decoder, a JPEG without a libjpeg warning
(damaged data that still decodes, which TensorFlow's decoder would only print, without a name) unless the
conversion kept it on purpose (--keep-damaged-jpegs, listed in damaged_jpegs.jsonl), and its record index (DALI's;
the metadata holds no checksum of it), if any, gives every record's place. For the dataset: the invariants of its
metadata (inputs == records + rejects + unselected), the rejects list, the damaged JPEGs' and the groups of
duplicates.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np
import tensorflow as tf

from shardflow.core import metadata, record_index, schema
from shardflow.core.decoder import Decoder
from shardflow.core.images import jpeg_warning
from shardflow.core.shards import ShardReport, check_shard


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

    @property
    def notes(self) -> list[str]:
        """Worth knowing, not wrong."""
        old = sum(s.old_index for s in self.shards)
        return (
            [
                f"{old} record index(es) under their old name ({record_index.LEGACY_PREFIX}SHARD), which shard globs "
                f"(*.tfrecord*) read as shards: the DALI backend moves them into {record_index.FOLDER}/ on first "
                f"use, or delete them"
            ]
            if old
            else []
        )

    @property
    def damaged_kept(self) -> int:
        return sum(s.damaged_kept for s in self.shards)


def verify(data_dir: str, *, decode_images: bool = True, workers: int | None = None) -> VerifyReport:
    """Check every shard of `data_dir` against its metadata; see [`shardflow.tools.verify`][]."""
    info = metadata.read(data_dir)
    problems = _dataset_problems(info)
    try:
        damaged = metadata.read_damaged_jpegs(info)
    except OSError:
        damaged = []
        problems.append(f"{metadata.DAMAGED_JPEGS} is missing")
    if len(damaged) != info.damaged_jpegs:
        problems.append(
            f"{metadata.DAMAGED_JPEGS} lists {len(damaged)} records, the metadata says {info.damaged_jpegs}"
        )
    check = _RecordCheck(info, {(d["shard"], d["record"]): d["warning"] for d in damaged}) if decode_images else None
    jobs = [(split.name, shard) for split in info.splits.values() for shard in split.shards]
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        shards = list(pool.map(lambda job: check_shard(info, job[0], job[1], check=check, indexes=True), jobs))
    report = VerifyReport(data_dir, shards, problems)
    if check is not None and report.damaged_kept != len(damaged):
        problems.append(
            f"{metadata.DAMAGED_JPEGS} lists {len(damaged)} records, {report.damaged_kept} of them are in the shards"
        )
    return report


class _RecordCheck:
    """Records' problems, if any, and their image/filename: each parses with the schema's spec, its label is in
    range, a JPEG decodes without a libjpeg warning unless `listed` with that warning (kept by
    --keep-damaged-jpegs: its size is then read from its header), and its image decodes with the reader's decoder
    at full size (at the stored size, for a fixed-size dataset).

    Records are parsed as one batch and decoded by a parallel tf.data map; a batch that fails is checked again
    record by record, which names the bad one."""

    def __init__(self, info: metadata.DatasetInfo, listed: dict[tuple[str, int], str]):
        decoder = Decoder(info.schema)
        raw = info.schema.encoding == "raw"
        self._classes, self._stored_size, self._jpeg = (
            len(info.class_names),
            info.stored_size,
            info.schema.encoding == "jpeg",
        )
        self.listed = listed  # (shard, record index) -> the warning damaged_jpegs.jsonl gives

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def parse(records):
            fields = decoder.parse(records)
            shapes = fields.shape if raw else tf.zeros([tf.size(records), 3], tf.int64)
            return fields.label, fields.data, shapes, fields.filename

        def size(data, shape):
            return tf.shape(decoder.image(data, shape if raw else None))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None, 3], tf.int64)])
        def sizes(data, shapes):
            images = tf.data.Dataset.from_tensor_slices((data, shapes))
            sized = images.map(size, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            return sized.batch(tf.cast(tf.size(data), tf.int64)).get_single_element()

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def header(data):
            return tf.image.extract_jpeg_shape(data)

        self._parse, self._sizes, self._header = parse, sizes, header

    def __call__(self, records: list[bytes], listed: list[str | None]) -> list[tuple[str | None, str]]:
        try:
            labels, data, shapes, filenames = self._parse(tf.constant(records))
        except tf.errors.OpError as error:
            if len(records) == 1:
                return [(f"not a record of this dataset ({_reason(error)})", "")]
            return [result for one, warning in zip(records, listed) for result in self([one], [warning])]
        data = data.numpy()
        results: list[tuple[str | None, str]] = []
        to_decode = []
        for i, (label, filename) in enumerate(zip(labels.numpy().tolist(), filenames.numpy().tolist())):
            filename = filename.decode("utf-8", "backslashreplace")
            warning = jpeg_warning(data[i]) if self._jpeg else None
            wrong = [
                value
                for value in (label if isinstance(label, list) else [label])  # (multi-label: a list)
                if not (value == schema.UNLABELED or 0 <= value < self._classes)
            ]
            if wrong:
                results.append((f"label {wrong[0]} out of range", filename))
            elif warning and warning != listed[i]:
                also = (
                    ""
                    if listed[i] is None
                    else (f" (listed in {metadata.DAMAGED_JPEGS} with another warning: {listed[i]})")
                )
                results.append((warning + also, filename))
            elif warning:  # a damaged JPEG kept on purpose: its size from its header (TF's decoder would warn)
                results.append(self._size_problem(self._header(data[i]), filename))
            else:
                results.append((None, filename))
                to_decode.append(i)
        if not to_decode:
            return results
        try:
            decoded = self._sizes(tf.constant(data[to_decode]), tf.gather(shapes, to_decode)).numpy()
        except tf.errors.OpError as error:
            if len(records) == 1:
                return [(f"image does not decode ({_reason(error)})", results[0][1])]
            decoded = None
        for place, i in enumerate(to_decode):
            if decoded is not None:
                results[i] = self._size_problem(decoded[place], results[i][1])
            else:
                results[i] = self([records[i]], [listed[i]])[0]
        return results

    def _size_problem(self, size, filename: str) -> tuple[str | None, str]:
        height, width, _ = np.asarray(size).tolist()
        if self._stored_size not in (None, (height, width)):
            stored = "x".join(map(str, self._stored_size))
            return f"image is {height}x{width}, not the dataset's stored size {stored} (HxW)", filename
        return None, filename


def _reason(error: tf.errors.OpError) -> str:
    """The op's own words from a graph error (without "Graph execution error", the Python stack, node names)."""
    lines = [
        line
        for line in error.message.splitlines()
        if line and not line[0].isspace() and not line.startswith(("Graph execution error", "Detected at node"))
    ]
    return (lines[0] if lines else error.message).removeprefix("Name: <unknown>, ")  # a batch's record: no name


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
        return [
            f"{metadata.DUPLICATES} lists {listed[0]} groups ({listed[1]} leaking, {listed[2]} whose labels "
            f"differ), the metadata says {near.groups} ({near.leaks}, {near.labels_differ})"
        ]
    return []
