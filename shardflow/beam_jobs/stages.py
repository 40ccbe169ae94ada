"""The conversion job's stages as Beam composite transforms, each a named `PTransform` with `expand()` (runner UIs
show them by name; tests run each one alone with `TestPipeline` and `assert_that`):

  ReadAndPrepare  each worker reads tasks of inputs (on the local runner, taken from a shared queue as it frees
                  up: `staged.TaskQueue`), validates/encodes them and appends the records to a spill file of its
                  own; `RecordBatch` files (where the bytes are, plus statistics, in columns) in the staging
                  folder describe them, so the runner's memory stays flat (see `staged`).
                  Each record's split (a stable hash of its path, or the source's own folders) is chosen there.
  Dedupe          only with --dedupe exact|near (`duplicate_join`): FindDuplicates, then each group's first path
                  kept, the others rejected as "duplicate of PATH" (so no group is left in two splits).
  TakeCounts      only with --split-counts: exact counts per class, in hash order (one worker per class).
  PlanShards      per split: records in hash order (classes mixed), cut into shards of ~--shard-size-mb,
                  plus each range's partial statistics. Records are cut into ranges of path hashes, each range
                  sorted by one worker and placed in the shards by the ranges' counts alone (one combiner sums
                  them).
  WriteShards     each shard copied from the spill files into place, with its SHA-256 and its record index
                  (`record_index`, for DALI's reader).
  FindPairs       the records' duplicate keys (taken while preparing) joined by key across workers
                  (`duplicate_join`): the pairs that connect the duplicates the dataset holds, reported (and
                  listed in duplicates.jsonl by the launcher) whether or not --dedupe.
  Summarize       shard list, rejects and damaged JPEGs kept gathered into one summary file, with each split's
                  statistics merged from its ranges' partial ones and the pairs of duplicates joined into groups
                  there: a few values per range, shard and part, and only duplicates' pairs. Each of Beam's
                  stages costs the local runner 13-34 ms before its work; these need none of their own.

Beam `Metrics` counters (namespace "shardflow": records prepared, rejected by reason, record bytes, shards
written, shard bytes) show the job's progress in Dataflow's and Flink's UIs; `counters` reads them back.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.transforms.window import GlobalWindows

from shardflow.beam_jobs import duplicate_join, metadata_writer, records, staged
from shardflow.beam_jobs import splits as splits_lib
from shardflow.beam_jobs.progress import PLANNING, WRITING, Counted, ProgressWriter
from shardflow.beam_jobs.sources import ReadTask
from shardflow.beam_jobs.staged import StagedTask, TaskQueue
from shardflow.core import metadata, record_index, record_order, schema
from shardflow.core.framing import frame
from shardflow.core.images import ImageOptions, Rejected, prepare

NAMESPACE = "shardflow"
NO_CLASS = "no class in the file name (expected <class>.<id>.jpg, e.g. cat.123.jpg)"


class PrepareRecords(beam.DoFn):
    """StagedTask or TaskQueue -> per split, record batches saved in the staging folder (their bytes appended to this
    bundle's spill file); the main output names each batch file as (split, path), the others list rejects and
    the damaged JPEGs kept (`keep_damaged_jpegs`; else they are rejects), both as (path, reason).

    With `fractions` None (exact counts per class), the split is left to `take_counts` (key None). With
    `label_sets` (multi-label), an input's label is a label set id: its record holds that set's class indices."""

    REJECTS = "rejects"
    DAMAGED = "damaged"
    FINGERPRINT = "fingerprint"  # per bundle: the XOR of its inputs' `input_hash`
    RECORDS_PER_BATCH = 16384  # a worker holds at most this many records' columns per split

    def __init__(
        self,
        class_names: list[str],
        image_options: ImageOptions,
        fractions: dict[str, float] | None,
        staging: str,
        progress_dir: str | None,
        validation_from_train: float | None = None,
        keep_damaged_jpegs: bool = False,
        label_sets: list[tuple[int, ...]] | None = None,
    ):
        self._class_names, self._options, self._fractions = class_names, image_options, fractions
        self._staging, self._progress_dir, self._keep_damaged = staging, progress_dir, keep_damaged_jpegs
        self._validation_from_train, self._label_sets = validation_from_train, label_sets

    def setup(self):
        self._schema = schema.RecordSchema(
            tuple(self._class_names), self._options.channels, self._options.image_format, self._label_sets is not None
        )
        self._dtype = records.row_dtype(self._options.channels)
        self._progress = ProgressWriter(self._progress_dir)
        self._records = Metrics.counter(NAMESPACE, "records prepared")
        self._record_bytes = Metrics.counter(NAMESPACE, "record bytes")

    def start_bundle(self):
        self._spill, self._spill_path, self._offset, self._fingerprint = None, "", 0, 0
        self._pending: dict[str | None, list[records.RecordBatch]] = defaultdict(list)
        self._pending_records: Counter[str | None] = Counter()  # records in `_pending`, per split

    def process(self, tasks: StagedTask | TaskQueue) -> Iterable[Any]:
        for task in tasks.read_tasks():
            yield from self._prepare_task(task)

    def _prepare_task(self, task: ReadTask) -> Iterable[Any]:
        paths, rows = defaultdict(list), defaultdict(list)
        record_bytes = 0
        for item, payload in task.read():
            path = record_order.path_bytes(item.path)
            self._fingerprint ^= input_hash(path, payload)
            try:
                prepared = self._prepare(payload)
                if item.label is None:
                    raise Rejected(NO_CLASS)
                if prepared.warning and not self._keep_damaged:
                    raise Rejected(prepared.warning)
            except Rejected as reason:
                self._progress.add(rejected=True)
                Metrics.counter(NAMESPACE, f"rejected: {metadata.reject_kind(str(reason))}").inc()
                yield beam.pvalue.TaggedOutput(self.REJECTS, (path, str(reason)))
                continue
            label = item.label if self._label_sets is None else self._label_sets[item.label]
            framed = frame(self._schema.serialize(prepared.data, label, item.path))
            offset = self._append(framed)
            self._progress.add(rejected=False)
            record_bytes += len(framed)
            if prepared.warning:
                Metrics.counter(NAMESPACE, "damaged JPEGs kept").inc()
                yield beam.pvalue.TaggedOutput(self.DAMAGED, (path, prepared.warning))
            path_hash = record_order.stable_hash(path)
            split = splits_lib.split_of(item.split, path_hash, self._fractions, self._validation_from_train)
            paths[split].append(path)
            rows[split].append(
                records.row(
                    path_hash,
                    item.label,
                    offset,
                    len(framed),
                    prepared.stats,
                    prepared.hashes,
                    damaged=prepared.warning is not None,
                )
            )
        self._records.inc(sum(map(len, paths.values())))  # per task, not per record: each update costs microseconds
        self._record_bytes.inc(record_bytes)
        for split in paths:
            self._pending[split].append(
                records.RecordBatch(
                    split, (self._spill_path,), tuple(paths[split]), np.array(rows[split], dtype=self._dtype)
                )
            )
            self._pending_records[split] += len(paths[split])
            if self._pending_records[split] >= self.RECORDS_PER_BATCH:
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
        del self._pending_records[split]
        return split, staged.save(batch, FileSystems.join(self._staging, "batches"))

    def finish_bundle(self):
        if self._spill is not None:
            self._spill.close()
        for split in list(self._pending):
            yield GlobalWindows.windowed_value(self._save(split))
        yield beam.pvalue.TaggedOutput(self.FINGERPRINT, GlobalWindows.windowed_value(self._fingerprint))
        self._progress.flush()


def cut_by_class(none_path: tuple[None, str], batch_dir: str) -> Iterable[tuple[int, str]]:
    """(None, record batch file) -> (label, file of its records of that class) for each class it holds."""
    batch = staged.load(none_path[1])
    labels = batch.rows["label"]
    for label in np.unique(labels).tolist():
        yield label, staged.save(batch.take(np.flatnonzero(labels == label)), batch_dir)


def take_counts(label_paths: tuple[int, Iterable[str]], counts: dict[str, int], batch_dir: str) -> Iterable[Any]:
    """(label, all its record batch files) -> (split, batch file) with exactly `counts` records of the class per
    split, taken in hash order; tagged "unselected", the number of records left over."""
    _, paths = label_paths
    of_class = records.concat([staged.load(p) for p in paths])
    order, start = of_class.hash_order(), 0
    for split, count in counts.items():
        if order[start : start + count].size:
            yield split, staged.save(of_class.take(order[start : start + count], split), batch_dir)
        start += count
    yield beam.pvalue.TaggedOutput("unselected", max(0, len(order) - start))


class ShardJob(NamedTuple):
    """One shard to write: its place among the split's shards and the files listing its records, in order."""

    split: str
    shard_index: int
    num_shards: int
    batch_files: tuple[str, ...]


RECORDS_PER_RANGE = 50_000  # records a worker sorts at once when planning shards (about 200 bytes each)


def ranges_for(num_inputs: int) -> int:
    """How many ranges of path hashes the records of `num_inputs` inputs are sorted in."""
    return max(1, math.ceil(num_inputs / RECORDS_PER_RANGE))


def cut_by_hash(split_path: tuple[str, str], num_ranges: int, batch_dir: str) -> Iterable[Any]:
    """(split, record batch file) -> ((split, range), (file, records, bytes)) for each range of path hashes its
    records fall in (range r: the hashes whose top 32 bits times num_ranges / 2**32 round down to r, so ranges
    in order are hash order); without the duplicate keys."""
    split, path = split_path
    batch = records.without_duplicate_keys(staged.load(path))
    high = batch.rows["hash"] >> np.uint64(32)
    ranges = ((high * np.uint64(num_ranges)) >> np.uint64(32)).astype(np.int64)
    for number in np.unique(ranges).tolist():
        part = batch.take(np.flatnonzero(ranges == number))
        yield (split, number), (staged.save(part, batch_dir), len(part), int(part.rows["length"].sum()))


def add_sizes(sizes: Iterable[dict[tuple[str, int], tuple[int, int]]]) -> dict[tuple[str, int], tuple[int, int]]:
    """Ranges' (records, bytes) added up, range by range."""
    total: dict[tuple[str, int], tuple[int, int]] = {}
    for partial in sizes:
        for key, (count, size) in partial.items():
            had = total.get(key, (0, 0))
            total[key] = (had[0] + count, had[1] + size)
    return total


def split_sizes(sizes: dict[tuple[str, int], tuple[int, int]], split: str) -> tuple[int, int, dict[int, int]]:
    """From every range's (records, bytes): the split's records, bytes, and records per range."""
    counts = {number: count for (name, number), (count, _) in sizes.items() if name == split}
    return sum(counts.values()), sum(b for (name, _), (_, b) in sizes.items() if name == split), counts


def sort_range(
    range_files: tuple[tuple[str, int], Iterable[str]],
    sizes: dict[tuple[str, int], tuple[int, int]],
    shard_bytes: int,
    batch_dir: str,
) -> Iterable[Any]:
    """((split, range), its files) -> its records in hash order, cut where the split's shards begin:
    ((split, shard), (range, num_shards, piece file)); tagged "stats", (split, `records.partial_statistics`).
    The split has max(1, min(records, ceil(bytes / shard_bytes))) shards, shard i its records
    [i * n // shards, (i + 1) * n // shards) in hash order: only counts per range are needed to place them."""
    (split, number), files = range_files
    batch = records.concat([staged.load(f) for f in files], split)
    batch = batch.take(batch.hash_order())
    total, total_bytes, counts = split_sizes(sizes, split)
    num_shards = max(1, min(total, math.ceil(total_bytes / shard_bytes)))
    start = sum(count for other, count in counts.items() if other < number)
    bounds = np.arange(num_shards + 1) * total // num_shards
    shard_of = np.searchsorted(bounds, np.arange(start, start + len(batch)), side="right") - 1
    for shard in np.unique(shard_of).tolist():
        piece = batch.take(np.flatnonzero(shard_of == shard))
        yield (split, shard), (number, num_shards, staged.save(piece, batch_dir))
    yield beam.pvalue.TaggedOutput("stats", (split, records.partial_statistics(batch)))


def shard_job(shard_pieces: tuple[tuple[str, int], Iterable[tuple[int, int, str]]]) -> ShardJob:
    """((split, shard), its pieces) -> the shard's job, pieces in range (so hash) order."""
    (split, index), pieces = shard_pieces
    pieces = sorted(pieces)
    return ShardJob(split, index, pieces[0][1], tuple(piece for _, _, piece in pieces))


class WriteShard(beam.DoFn):
    """ShardJob -> the shard file and its record index in the staging folder (copied from spill files), and its
    description; shards written are counted in `progress_dir`."""

    def __init__(self, shard_dir: str, name: str, progress_dir: str | None = None):
        self._shard_dir, self._name, self._progress_dir = shard_dir, name, progress_dir

    def setup(self):
        self._progress = ProgressWriter(self._progress_dir, WRITING)

    def finish_bundle(self):
        self._progress.flush()

    def process(self, job: ShardJob) -> Iterable[dict[str, Any]]:
        batch = records.concat([staged.load(f) for f in job.batch_files], job.split)
        filename = metadata_writer.shard_filename(self._name, job.split, job.shard_index, job.num_shards)
        digest, size = hashlib.sha256(), 0
        spills = [FileSystems.open(path) for path in batch.spills]
        try:
            with FileSystems.create(FileSystems.join(self._shard_dir, filename)) as out:
                rows = batch.rows
                for spill, offset, length in zip(
                    rows["spill"].tolist(), rows["offset"].tolist(), rows["length"].tolist()
                ):
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
        self._progress.add()
        Metrics.counter(NAMESPACE, "shard bytes").inc(size)
        damaged = [
            [index, batch.paths[index].decode("utf-8", "surrogateescape")]
            for index in np.flatnonzero(batch.rows["damaged"]).tolist()
        ]
        yield {
            "split": job.split,
            "index": job.shard_index,
            "filename": filename,
            "num_records": len(batch),
            "num_bytes": size,
            "sha256": digest.hexdigest(),
            "damaged": damaged,
        }


def _write_summary(items: list[tuple[str, Any]], path: str) -> None:
    summary: dict[str, Any] = {"shards": [], "reject_files": [], "damaged": [], "unselected": 0}
    fingerprint, pairs, statistics = 0, [], defaultdict(list)
    for kind, value in items:
        if kind == "pairs":
            pairs += value
        elif kind == "statistics":
            statistics[value[0]].append(value[1])
        elif kind == "unselected":
            summary["unselected"] += value
        elif kind == "fingerprint":
            fingerprint ^= value
        elif kind == "damaged":
            summary[kind].append((value[0].decode("utf-8", "surrogateescape"), value[1]))
        else:
            summary[kind].append(value)
    summary["fingerprint"] = f"{fingerprint:064x}"
    summary["splits"] = [records.split_statistics(split, partials) for split, partials in sorted(statistics.items())]
    summary["duplicates"] = duplicate_join.summary_groups(duplicate_join.group_pairs(pairs))
    with FileSystems.create(path) as f:
        f.write(json.dumps(summary).encode())


def input_hash(path: bytes, payload: bytes | np.ndarray | OSError) -> int:
    """One input's share of the source fingerprint, from its path, size and content. Shares are combined by XOR,
    so the fingerprint does not depend on which worker read what, or in which order."""
    content = payload.tobytes() if isinstance(payload, np.ndarray) else b"" if isinstance(payload, OSError) else payload
    digest = hashlib.sha256(
        hashlib.sha256(path).digest() + len(content).to_bytes(8, "big") + hashlib.sha256(content).digest()
    )
    return int.from_bytes(digest.digest(), "big")


class ReadAndPrepare(beam.PTransform):
    """Staged read tasks, or task queues -> (split, record batch file); tagged `PrepareRecords.REJECTS` and
    `PrepareRecords.DAMAGED`, (path, reason), and `PrepareRecords.FINGERPRINT`, shares of the source fingerprint."""

    def __init__(
        self,
        class_names: list[str],
        image_options: ImageOptions,
        fractions: dict[str, float] | None,
        staging: str,
        progress_dir: str | None = None,
        validation_from_train: float | None = None,
        keep_damaged_jpegs: bool = False,
        label_sets: list[tuple[int, ...]] | None = None,
    ):
        super().__init__()
        self._prepare = PrepareRecords(
            class_names,
            image_options,
            fractions,
            staging,
            progress_dir,
            validation_from_train,
            keep_damaged_jpegs,
            label_sets,
        )

    def expand(self, tasks):
        return (
            tasks
            | "SpreadInputs" >> beam.Reshuffle()
            | "Prepare"
            >> beam.ParDo(self._prepare).with_outputs(
                PrepareRecords.REJECTS, PrepareRecords.DAMAGED, PrepareRecords.FINGERPRINT, main="records"
            )
        )


class TakeCounts(beam.PTransform):
    """Record batch files without a split -> exactly `counts` records per class and split, in hash order;
    tagged "unselected", the number of records left over."""

    def __init__(self, counts: dict[str, int], batch_dir: str):
        super().__init__()
        self._counts, self._batch_dir = counts, batch_dir

    def expand(self, batches):
        return (
            batches
            | "CutByClass" >> beam.FlatMap(cut_by_class, self._batch_dir)
            | "GroupByClass" >> beam.GroupByKey()
            | "Take"
            >> beam.FlatMap(take_counts, self._counts, self._batch_dir).with_outputs("unselected", main="assigned")
        )


class PlanShards(beam.PTransform):
    """(split, record batch file) -> shard jobs, and tagged "stats", (split, `records.partial_statistics`) of each
    range: records cut into `num_ranges` ranges of path hashes, each sorted by one worker, placed in shards by
    counts alone; ranges sorted are counted in `progress_dir`."""

    def __init__(self, shard_bytes: int, num_ranges: int, batch_dir: str, progress_dir: str | None = None):
        super().__init__()
        self._shard_bytes, self._num_ranges, self._batch_dir = shard_bytes, num_ranges, batch_dir
        self._progress_dir = progress_dir

    def expand(self, batches):
        cut = batches | "CutByHash" >> beam.FlatMap(cut_by_hash, self._num_ranges, self._batch_dir)
        sizes = (
            cut
            | "RangeSizes" >> beam.MapTuple(lambda key, value: {key: value[1:]})
            | "AllSizes" >> beam.CombineGlobally(add_sizes).without_defaults()
        )
        sorted_ranges = (
            cut
            | "RangeFiles" >> beam.MapTuple(lambda key, value: (key, value[0]))
            | "GroupByRange" >> beam.GroupByKey()
            | "SortRange"
            >> beam.ParDo(
                Counted(sort_range, self._progress_dir, PLANNING),
                beam.pvalue.AsSingleton(sizes),
                self._shard_bytes,
                self._batch_dir,
            ).with_outputs("stats", main="pieces")
        )
        jobs = sorted_ranges.pieces | "GroupByShard" >> beam.GroupByKey() | "ShardJob" >> beam.Map(shard_job)
        return {"jobs": jobs, "stats": sorted_ranges.stats}


class WriteShards(beam.PTransform):
    """Shard jobs -> shard files in `shard_dir`, and their descriptions (filename, records, bytes, SHA-256)."""

    def __init__(self, shard_dir: str, name: str, progress_dir: str | None = None):
        super().__init__()
        self._shard_dir, self._name, self._progress_dir = shard_dir, name, progress_dir

    def expand(self, jobs):
        return jobs | "Write" >> beam.ParDo(WriteShard(self._shard_dir, self._name, self._progress_dir))


class Summarize(beam.PTransform):
    """(kind, value) pairs from every stage -> one summary file at `path` (what `finalize` reads): "statistics",
    (split, partial statistics), merged per split; "pairs", lists of pairs of duplicates, joined into groups
    (`duplicate_join.group_pairs`); the rest gathered, added up or combined as each kind needs."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, tagged):
        return (
            tagged
            | "Gather" >> beam.Flatten()
            # (never empty: every reading bundle tags its share of the fingerprint)
            | "ToList" >> beam.CombineGlobally(beam.combiners.ToListCombineFn()).without_defaults()
            | "Write" >> beam.Map(_write_summary, self._path)
        )


def counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The job's counters (committed values), by name."""
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    totals: dict[str, int] = defaultdict(int)
    for counter in found:
        totals[counter.key.metric.name] += counter.committed or 0
    return dict(sorted(totals.items()))
