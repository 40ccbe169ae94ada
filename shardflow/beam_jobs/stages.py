"""The conversion job's stages as Beam composite transforms, each a named `PTransform` with `expand()` (runner UIs
show them by name; tests run each one alone with `TestPipeline` and `assert_that`):

  ReadAndPrepare  each worker reads a task of inputs, validates/encodes them and appends the records to a
                  spill file of its own; `RecordBatch` files (where the bytes are, plus statistics, in columns)
                  in the staging folder describe them, so the runner's memory stays flat (see `staged`).
                  Each record's split (a stable hash of its path, or the source's own folders) is chosen there.
  Dedupe          only with --dedupe exact|near: FindDuplicates, then each group's first path kept, the others
                  rejected as "duplicate of PATH" (so no group is left in two splits).
  TakeCounts      only with --split-counts: exact counts per class, in hash order.
  PlanShards      per split: records in hash order (classes mixed), cut into shards of ~--shard-size-mb,
                  plus the split's statistics.
  WriteShards     each shard copied from the spill files into place, with its SHA-256 and its record index
                  (`record_index`, for DALI's reader).
  FindDuplicates  the records' duplicate keys (taken while preparing) gathered in one worker and grouped
                  (`duplicates.find_groups`): the groups the dataset holds, reported (and listed in
                  duplicates.jsonl by the launcher) whether or not --dedupe.
  Summarize       shard list, statistics, rejects and duplicate groups gathered into one summary file.

Beam `Metrics` counters (namespace "shardflow": records prepared, rejected by reason, record bytes, shards
written, shard bytes) show the job's progress in Dataflow's and Flink's UIs; `counters` reads them back.
"""
from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.transforms.window import GlobalWindows
from numpy.lib.recfunctions import repack_fields

from shardflow import duplicates, metadata, record_index, schema
from shardflow.beam_jobs import metadata_writer, records, staged
from shardflow.beam_jobs import splits as splits_lib
from shardflow.beam_jobs.progress import ProgressWriter
from shardflow.beam_jobs.staged import StagedTask
from shardflow.framing import frame
from shardflow.images import ImageOptions, Rejected, prepare

NAMESPACE = "shardflow"
NO_CLASS = "no class in the file name (expected <class>.<id>.jpg, e.g. cat.123.jpg)"


class PrepareRecords(beam.DoFn):
    """StagedTask -> per split, record batches saved in the staging folder (their bytes appended to this
    bundle's spill file); the main output names each batch file as (split, path), the other lists rejects.

    With `fractions` None (exact counts per class), the split is left to `take_counts` (key None)."""

    REJECTS = "rejects"
    FINGERPRINT = "fingerprint"  # per bundle: the XOR of its inputs' `input_hash`
    RECORDS_PER_BATCH = 65536  # a worker holds at most this many records' columns per split

    def __init__(self, class_names: list[str], image_options: ImageOptions, fractions: dict[str, float] | None,
                 staging: str, progress_dir: str | None):
        self._class_names, self._options, self._fractions = class_names, image_options, fractions
        self._staging, self._progress_dir = staging, progress_dir

    def setup(self):
        self._schema = schema.RecordSchema(tuple(self._class_names), self._options.channels,
                                           self._options.image_format)
        self._dtype = records.row_dtype(self._options.channels)
        self._progress = ProgressWriter(self._progress_dir)
        self._records = Metrics.counter(NAMESPACE, "records prepared")
        self._record_bytes = Metrics.counter(NAMESPACE, "record bytes")

    def start_bundle(self):
        self._spill, self._spill_path, self._offset, self._fingerprint = None, "", 0, 0
        self._pending: dict[str | None, list[records.RecordBatch]] = defaultdict(list)

    def process(self, staged_task: StagedTask) -> Iterable[Any]:
        paths, rows = defaultdict(list), defaultdict(list)
        for item, payload in staged_task.load().read():
            path = _transportable(item.path)
            self._fingerprint ^= input_hash(path, payload)
            try:
                prepared = self._prepare(payload)
                if item.label is None:
                    raise Rejected(NO_CLASS)
            except Rejected as reason:
                self._progress.add(rejected=True)
                Metrics.counter(NAMESPACE, f"rejected: {metadata.reject_kind(str(reason))}").inc()
                yield beam.pvalue.TaggedOutput(self.REJECTS, (path, str(reason)))
                continue
            framed = frame(self._schema.serialize(prepared.data, item.label, item.path))
            offset = self._append(framed)
            self._progress.add(rejected=False)
            self._records.inc()
            self._record_bytes.inc(len(framed))
            path_hash = splits_lib.stable_hash(path)
            split = item.split or (splits_lib.split_for_hash(path_hash, self._fractions) if self._fractions else None)
            paths[split].append(path)
            rows[split].append(records.row(path_hash, item.label, offset, len(framed), prepared.stats,
                                           prepared.hashes))
        for split in paths:
            pending = self._pending[split]
            pending.append(records.RecordBatch(split, (self._spill_path,), tuple(paths[split]),
                                               np.array(rows[split], dtype=self._dtype)))
            if sum(map(len, pending)) >= self.RECORDS_PER_BATCH:
                yield self._save(split)

    def _prepare(self, payload):
        if isinstance(payload, OSError):
            raise Rejected(f"cannot read file: {payload}")
        return prepare(payload, self._options, hashes=True)

    def _append(self, framed: bytes) -> int:
        if self._spill is None:
            self._spill_path = FileSystems.join(self._staging, "spill", f"{uuid.uuid4().hex}.spill")
            self._spill = FileSystems.create(self._spill_path)
        offset = self._offset
        self._spill.write(framed)
        self._offset += len(framed)
        return offset

    def _save(self, split: str | None) -> tuple[str | None, str]:
        batch = records.concat(self._pending.pop(split), split)
        return split, staged.save(batch, FileSystems.join(self._staging, "batches"))

    def finish_bundle(self):
        if self._spill is not None:
            self._spill.close()
        for split in list(self._pending):
            yield GlobalWindows.windowed_value(self._save(split))
        yield beam.pvalue.TaggedOutput(self.FINGERPRINT, GlobalWindows.windowed_value(self._fingerprint))
        self._progress.flush()


def take_counts(none_paths, counts: dict[str, int], batch_dir: str) -> Iterable[Any]:
    """All batch files (key None) -> (split, batch file) with exactly `counts` records of each class per split,
    taken in hash order; tagged "unselected", the number of records left over."""
    _, paths = none_paths
    batch = records.concat([staged.load(p) for p in paths])
    taken: dict[str, list[records.RecordBatch]] = defaultdict(list)
    unselected, labels = 0, batch.rows["label"]
    for label in np.unique(labels).tolist():
        of_class = batch.take(np.flatnonzero(labels == label))
        order, start = of_class.hash_order(), 0
        for split, count in counts.items():
            if order[start:start + count].size:
                taken[split].append(of_class.take(order[start:start + count]))
            start += count
        unselected += max(0, len(order) - start)
    for split, parts in taken.items():
        yield split, staged.save(records.concat(parts, split), batch_dir)
    yield beam.pvalue.TaggedOutput("unselected", unselected)


Groups = dict[str, list[list[tuple[bytes, str | None, int]]]]  # kind -> groups of (path, split, label), by path


HASH_COLUMNS = duplicates.ImageHashes._fields  # the record columns that hold `duplicates.ImageHashes`


def hash_columns(split_path: tuple[str | None, str]) -> tuple[str | None, tuple[bytes, ...], np.ndarray]:
    """(split, record batch file) -> its records' split, paths, labels and duplicate keys (`HASH_COLUMNS`)."""
    split, path = split_path
    batch = staged.load(path)
    return split, batch.paths, repack_fields(batch.rows[["label", *HASH_COLUMNS]])


def group_duplicates(columns: list[tuple[str | None, tuple[bytes, ...], np.ndarray]]) -> Groups:
    """Every record's hash columns -> per kind ("exact", "near"), the groups of duplicates as (path, split,
    label), members and groups in path order."""
    members = sorted(((path, split, label, duplicates.ImageHashes(*keys)) for split, paths, rows in columns
                      for path, label, keys in zip(paths, rows["label"].tolist(),
                                                   zip(*(rows[column].tolist() for column in HASH_COLUMNS)))),
                     key=lambda member: member[0])
    keys = [member[3] for member in members]
    return {kind: [[members[i][:3] for i in group] for group in duplicates.find_groups(keys, kind)]
            for kind in duplicates.KINDS}


def duplicates_to_drop(groups: Groups, kind: str) -> dict[bytes, bytes]:
    """Each duplicate of `kind` but its group's first (smallest) path -> that path."""
    return {member[0]: group[0][0] for group in groups[kind] for member in group[1:]}


def drop_duplicates(split_path: tuple[str | None, str], to_drop: dict[bytes, bytes],
                    batch_dir: str) -> Iterable[Any]:
    """(split, record batch file) -> the same without the records in `to_drop` (unless none is left); tagged
    "rejects", each dropped one as (path, "duplicate of PATH")."""
    split, path = split_path
    batch = staged.load(path)
    dropped = np.array([p in to_drop for p in batch.paths], dtype=bool)
    if not dropped.any():
        yield split_path
        return
    for index in np.flatnonzero(dropped).tolist():
        Metrics.counter(NAMESPACE, f"rejected: {metadata.DUPLICATE}").inc()
        kept = to_drop[batch.paths[index]].decode("utf-8", "surrogateescape")
        yield beam.pvalue.TaggedOutput("rejects", (batch.paths[index], f"{metadata.DUPLICATE_OF}{kept}"))
    if not dropped.all():
        yield split, staged.save(batch.take(np.flatnonzero(~dropped)), batch_dir)


class ShardJob(NamedTuple):
    """One shard to write: its place among the split's shards and the file listing its records."""

    split: str
    index: int
    num_shards: int
    batch_file: str  # the shard's records, in order


def plan_shards(split_paths, shard_bytes: int, batch_dir: str) -> Iterable[Any]:
    """Per split: the shard jobs (records in hash order, cut evenly) and, tagged "stats", the split statistics."""
    split, paths = split_paths
    batch = records.concat([staged.load(p) for p in paths], split)
    batch = batch.take(batch.hash_order())
    num_shards = max(1, min(len(batch), math.ceil(int(batch.rows["length"].sum()) / shard_bytes)))
    for index in range(num_shards):
        shard = batch.take(slice(index * len(batch) // num_shards, (index + 1) * len(batch) // num_shards))
        yield ShardJob(split, index, num_shards, staged.save(shard, batch_dir))
    yield beam.pvalue.TaggedOutput("stats", records.split_statistics(split, batch))


class WriteShard(beam.DoFn):
    """ShardJob -> the shard file and its record index in the staging folder (copied from spill files), and its
    description."""

    def __init__(self, shard_dir: str, name: str):
        self._shard_dir, self._name = shard_dir, name

    def process(self, job: ShardJob) -> Iterable[dict[str, Any]]:
        batch = staged.load(job.batch_file)
        filename = metadata_writer.shard_filename(self._name, job.split, job.index, job.num_shards)
        digest, size = hashlib.sha256(), 0
        spills = [FileSystems.open(path) for path in batch.spills]
        try:
            with FileSystems.create(FileSystems.join(self._shard_dir, filename)) as out:
                rows = batch.rows
                for spill, offset, length in zip(rows["spill"].tolist(), rows["offset"].tolist(),
                                                 rows["length"].tolist()):
                    spills[spill].seek(offset)
                    data = spills[spill].read(length)
                    digest.update(data)
                    out.write(data)
                    size += len(data)
        finally:
            for handle in spills:
                handle.close()
        with FileSystems.create(FileSystems.join(self._shard_dir, record_index.index_filename(filename))) as out:
            out.write(record_index.index_text(batch.rows["length"].tolist()).encode())
        Metrics.counter(NAMESPACE, "shards written").inc()
        Metrics.counter(NAMESPACE, "shard bytes").inc(size)
        yield {"split": job.split, "index": job.index, "filename": filename, "num_records": len(batch),
               "num_bytes": size, "sha256": digest.hexdigest()}


def _transportable(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _write_summary(items: list[tuple[str, Any]], path: str) -> None:
    summary: dict[str, Any] = {"shards": [], "splits": [], "rejects": [], "unselected": 0}
    fingerprint = 0
    for kind, value in items:
        if kind == "duplicates":
            summary[kind] = {k: [[(p.decode("utf-8", "surrogateescape"), split, label) for p, split, label in group]
                                 for group in groups] for k, groups in value.items()}
        elif kind == "unselected":
            summary["unselected"] += value
        elif kind == "fingerprint":
            fingerprint ^= value
        elif kind == "rejects":
            summary["rejects"].append((value[0].decode("utf-8", "surrogateescape"), value[1]))
        else:
            summary[kind].append(value)
    summary["fingerprint"] = f"{fingerprint:064x}"
    with FileSystems.create(path) as f:
        f.write(json.dumps(summary).encode())


def input_hash(path: bytes, payload: bytes | np.ndarray | OSError) -> int:
    """One input's share of the source fingerprint, from its path, size and content. Shares are combined by XOR,
    so the fingerprint does not depend on which worker read what, or in which order."""
    content = payload.tobytes() if isinstance(payload, np.ndarray) else b"" if isinstance(payload, OSError) else payload
    digest = hashlib.sha256(hashlib.sha256(path).digest() + len(content).to_bytes(8, "big")
                            + hashlib.sha256(content).digest())
    return int.from_bytes(digest.digest(), "big")


class ReadAndPrepare(beam.PTransform):
    """Staged read tasks -> (split, record batch file); tagged `PrepareRecords.REJECTS`, (path, reason), and
    `PrepareRecords.FINGERPRINT`, shares of the source fingerprint."""

    def __init__(self, class_names: list[str], image_options: ImageOptions, fractions: dict[str, float] | None,
                 staging: str, progress_dir: str | None = None):
        super().__init__()
        self._prepare = PrepareRecords(class_names, image_options, fractions, staging, progress_dir)

    def expand(self, tasks):
        return (tasks
                | "SpreadInputs" >> beam.Reshuffle()
                | "Prepare" >> beam.ParDo(self._prepare).with_outputs(
                    PrepareRecords.REJECTS, PrepareRecords.FINGERPRINT, main="records"))


class FindDuplicates(beam.PTransform):
    """(split, record batch file) -> one element: per kind, the groups of duplicates (`group_duplicates`)."""

    def expand(self, batches):
        return (batches
                | "HashColumns" >> beam.Map(hash_columns)
                | "Gather" >> beam.combiners.ToList()
                | "Group" >> beam.Map(group_duplicates))


class Dedupe(beam.PTransform):
    """(split, record batch file) -> the same, one image kept per group of `kind` duplicates (its smallest path);
    tagged "rejects", the others as (path, "duplicate of PATH")."""

    def __init__(self, kind: str, batch_dir: str):
        super().__init__()
        duplicates.check_kind(kind, "--dedupe")
        self._kind, self._batch_dir = kind, batch_dir

    def expand(self, batches):
        to_drop = (batches
                   | "FindDuplicates" >> FindDuplicates()
                   | "ChooseKept" >> beam.Map(duplicates_to_drop, self._kind))
        return batches | "Drop" >> beam.FlatMap(drop_duplicates, beam.pvalue.AsSingleton(to_drop),
                                                self._batch_dir).with_outputs("rejects", main="kept")


class TakeCounts(beam.PTransform):
    """Record batch files without a split -> exactly `counts` records per class and split, in hash order;
    tagged "unselected", the number of records left over."""

    def __init__(self, counts: dict[str, int], batch_dir: str):
        super().__init__()
        self._counts, self._batch_dir = counts, batch_dir

    def expand(self, batches):
        return (batches
                | "GroupAll" >> beam.GroupByKey()
                | "Take" >> beam.FlatMap(take_counts, self._counts, self._batch_dir).with_outputs(
                    "unselected", main="assigned"))


class PlanShards(beam.PTransform):
    """(split, record batch file) -> shard jobs, and tagged "stats", each split's statistics."""

    def __init__(self, shard_bytes: int, batch_dir: str):
        super().__init__()
        self._shard_bytes, self._batch_dir = shard_bytes, batch_dir

    def expand(self, batches):
        return (batches
                | "GroupBySplit" >> beam.GroupByKey()
                | "Plan" >> beam.FlatMap(plan_shards, self._shard_bytes, self._batch_dir).with_outputs(
                    "stats", main="jobs"))


class WriteShards(beam.PTransform):
    """Shard jobs -> shard files in `shard_dir`, and their descriptions (filename, records, bytes, SHA-256)."""

    def __init__(self, shard_dir: str, name: str):
        super().__init__()
        self._shard_dir, self._name = shard_dir, name

    def expand(self, jobs):
        return (jobs
                | "SpreadShards" >> beam.Reshuffle()
                | "Write" >> beam.ParDo(WriteShard(self._shard_dir, self._name)))


class Summarize(beam.PTransform):
    """(kind, value) pairs from every stage -> one summary file at `path` (what `finalize` reads)."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, tagged):
        return (tagged
                | "Gather" >> beam.Flatten()
                | "ToList" >> beam.combiners.ToList()
                | "Write" >> beam.Map(_write_summary, self._path))


def counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The job's counters (committed values), by name."""
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    totals: dict[str, int] = defaultdict(int)
    for counter in found:
        totals[counter.key.metric.name] += counter.committed or 0
    return dict(sorted(totals.items()))
