"""The conversion's stages alone, as Beam's own examples test theirs: `TestPipeline` and `assert_that`."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import pathlib
import pickle
import subprocess
import sys
import threading
import time
import uuid

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from shardflow.beam_jobs import records, reject_files, staged, stages
from shardflow.beam_jobs.sources import list_source
from shardflow.core import metadata, record_index, schema
from shardflow.core.framing import frame
from shardflow.core.images import ImageOptions, prepare
from shardflow.core.record_order import stable_hash
from shardflow.testing.sample_data import write_sample_data

CLASSES = ("cat", "dog")


def record_batch(
    folder: pathlib.Path, photos: list[pathlib.Path], split: str | None, damaged: frozenset[str] = frozenset()
) -> tuple[str, list[bytes]]:
    """A record batch file of these photos (class from the Kaggle name), its records in a spill file of their own,
    as a worker of ReadAndPrepare leaves them (the names in `damaged` marked as damaged JPEGs kept); returns the
    batch file and the framed records in order."""
    record_schema = schema.RecordSchema(CLASSES, 3, "passthrough")
    spill = folder / f"{uuid.uuid4().hex}.spill"
    rows, framed_records = [], []
    for photo in photos:
        prepared = prepare(photo.read_bytes(), ImageOptions(), hashes=True)
        label = CLASSES.index(photo.name.split(".")[0])
        framed = frame(record_schema.serialize(prepared.data, label, photo.name))
        rows.append(
            records.row(
                stable_hash(photo.name),
                label,
                sum(map(len, framed_records)),
                len(framed),
                prepared.stats,
                prepared.hashes,
                damaged=photo.name in damaged,
            )
        )
        framed_records.append(framed)
    spill.write_bytes(b"".join(framed_records))
    batch = records.RecordBatch(
        split, (str(spill),), tuple(p.name.encode() for p in photos), np.array(rows, dtype=records.row_dtype(3))
    )
    return staged.save(batch, str(folder)), framed_records


def _prepared(pipeline, src, fractions: dict[str, float], staging: str):
    """ReadAndPrepare's outputs for the images in `src`."""
    listing = list_source(str(src))
    tasks = staged.stage_tasks(listing.tasks, f"{staging}-tasks.pickle")
    return (
        pipeline | beam.Create(tasks) | stages.ReadAndPrepare(listing.class_names, ImageOptions(), fractions, staging)
    )


def test_read_and_prepare_then_plan_shards(tmp_path):
    src = tmp_path / "src"
    write_sample_data(src, n=20, seed=9)
    (src / "cat.broken.jpg").write_bytes(b"")
    staging = str(tmp_path / "staging")
    with TestPipeline() as pipeline:
        prepared = _prepared(pipeline, src, {"train": 0.5, "test": 0.5}, staging)
        records = (
            prepared.records
            | "Count" >> beam.Map(lambda item: (item[0], len(staged.load(item[1]))))
            | beam.CombinePerKey(sum)
            | beam.Values()
            | beam.CombineGlobally(sum)
        )
        assert_that(records, equal_to([20]), label="every good image is a record")
        reasons = prepared[stages.PrepareRecords.REJECTS] | beam.Map(lambda reject: reject[1])
        assert_that(reasons, equal_to(["empty file (0 bytes)"]), label="the broken one is a reject")
        planned = prepared.records | stages.PlanShards(shard_bytes=60_000, num_ranges=1, batch_dir=staging)
        examples = planned["stats"] | beam.MapTuple(lambda split, partial: partial["num_examples"])
        total = examples | "Total" >> beam.CombineGlobally(sum)
        assert_that(total, equal_to([20]), label="statistics")
        shards = planned["jobs"] | beam.Map(lambda job: job.num_shards > 1) | beam.Distinct()
        assert_that(shards, equal_to([True]), label="small shards: several per split")


@pytest.mark.slow
def test_shards_and_statistics_do_not_depend_on_how_many_ranges_sort_them(tmp_path):
    """Planning sorts ranges of path hashes on separate workers: 1, 4 or 40 ranges give the same shards, byte for
    byte, and the same split statistics."""
    src = tmp_path / "src"
    write_sample_data(src, n=60, seed=3)
    staging = str(tmp_path / "staging")
    with TestPipeline() as pipeline:
        prepared = _prepared(pipeline, src, {"train": 0.7, "test": 0.3}, staging)
        outcomes = []
        for ranges in (1, 4, 40):
            planned = prepared.records | f"Plan{ranges}" >> stages.PlanShards(100_000, ranges, staging)
            shards = (
                planned["jobs"]
                | f"Write{ranges}" >> stages.WriteShards(f"{staging}/shards{ranges}", "pets")
                | f"Describe{ranges}" >> beam.Map(lambda s: (s["filename"], s["num_records"], s["sha256"]))
            )
            stats = (
                planned["stats"]
                | f"BySplit{ranges}" >> beam.GroupByKey()
                | f"Stats{ranges}"
                >> beam.MapTuple(
                    lambda split, partials: repr(sorted(records.split_statistics(split, partials).items()))
                )
            )
            outcomes.append(
                (shards, stats)
                | f"All{ranges}" >> beam.Flatten()
                | f"Sorted{ranges}" >> beam.combiners.ToList()
                | f"Key{ranges}" >> beam.Map(lambda items: sorted(map(repr, items)))
            )
        one, *others = outcomes
        for index, other in enumerate(others):
            both = (
                (one, other)
                | f"Pair{index}" >> beam.Flatten()
                | f"Distinct{index}" >> beam.Map(repr)
                | f"Unique{index}" >> beam.Distinct()
                | f"Count{index}" >> beam.combiners.Count.Globally()
            )
            assert_that(both, equal_to([1]), label=f"same as one range ({index})")


def test_take_counts_takes_exact_counts_per_class_in_hash_order(kaggle_dir, tmp_path):
    """Records without a split (--split-counts), in two batches that mix the classes: each class gives its first
    3 records by path hash to train, the next 2 to test; the rest are counted as unselected."""
    photos = [kaggle_dir / f"{name}.{i}.jpg" for name in CLASSES for i in range(6)]
    batches = [record_batch(tmp_path, part, None)[0] for part in (photos[:7], photos[7:])]
    expected = []
    for name in CLASSES:
        ordered = sorted((p.name for p in photos if p.name.startswith(name)), key=lambda n: (stable_hash(n), n))
        expected += [("train", "train", CLASSES.index(name), n) for n in ordered[:3]]
        expected += [("test", "test", CLASSES.index(name), n) for n in ordered[3:5]]
    with TestPipeline() as pipeline:
        counted = (
            pipeline
            | beam.Create([(None, b) for b in batches])
            | stages.TakeCounts({"train": 3, "test": 2}, str(tmp_path / "taken"))
        )
        taken = counted.assigned | beam.FlatMap(
            lambda item: [
                (item[0], staged.load(item[1]).split, int(label), path.decode())
                for label, path in zip(staged.load(item[1]).rows["label"], staged.load(item[1]).paths)
            ]
        )
        assert_that(taken, equal_to(expected), label="exact counts in hash order")
        left = counted.unselected | beam.CombineGlobally(sum)
        assert_that(left, equal_to([2]), label="one record of each class left over")


def test_write_shards_copies_the_records_with_their_index_and_digest(kaggle_dir, tmp_path):
    """Two shard jobs, the second made of two pieces: each shard holds its pieces' framed records in order (TensorFlow
    reads them back), its record index matches its framing, its description gives its size and SHA-256 and the
    damaged JPEGs kept with their place in it."""
    photos = sorted(kaggle_dir.glob("*.jpg"))[:9]
    first, first_records = record_batch(tmp_path, photos[:4], "train")
    second, second_records = record_batch(tmp_path, photos[4:7], "train", damaged=frozenset({photos[5].name}))
    third, third_records = record_batch(tmp_path, photos[7:], "train")
    contents = [b"".join(first_records), b"".join(second_records + third_records)]
    shard_dir = tmp_path / "shards"
    expected = [
        {
            "split": "train",
            "index": index,
            "filename": f"pets-train.tfrecord-{index:05d}-of-00002",
            "num_records": count,
            "num_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "damaged": [[1, photos[5].name]] if index else [],
        }
        for index, (count, data) in enumerate(zip((4, 5), contents))
    ]
    with TestPipeline() as pipeline:
        jobs = pipeline | beam.Create(
            [stages.ShardJob("train", 0, 2, (first,)), stages.ShardJob("train", 1, 2, (second, third))]
        )
        described = jobs | stages.WriteShards(str(shard_dir), "pets")
        assert_that(described, equal_to(expected))
    for index, data in enumerate(contents):
        shard = shard_dir / expected[index]["filename"]
        assert shard.read_bytes() == data
        assert sum(1 for _ in tf.data.TFRecordDataset(str(shard))) == expected[index]["num_records"]
        assert (shard_dir / record_index.index_filename(shard.name)).read_text() == record_index.scan(str(shard))


def test_summarize_gathers_what_every_stage_tagged_into_one_file(kaggle_dir, tmp_path):
    """Tagged values from several stages (none damaged here) -> one summary: lists gathered, the unselected counts
    summed, the fingerprint shares combined by XOR, each split's statistics merged from its ranges' partial ones (the
    same as of all its records at once), and the parts' pairs of duplicates joined into groups."""
    path = str(tmp_path / "summary.json")
    photos = sorted(kaggle_dir.glob("*.jpg"))[:9]
    batches = [staged.load(record_batch(tmp_path, part, "train")[0]) for part in (photos[:4], photos[4:])]
    shards = [{"split": "train", "index": i, "filename": f"s{i}"} for i in range(3)]
    members = [(name.encode(), "train", 0, "batch") for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    tagged = {
        "shards": shards,
        "statistics": [("train", records.partial_statistics(batch)) for batch in batches],
        "reject_files": ["a", "b"],
        "damaged": [],
        "pairs": [[("exact", members[0], members[1])], [("near", members[1], members[2])], []],
        "fingerprint": [0b0110, 0b0011],
        "unselected": [2, 3],
    }
    whole = records.split_statistics("train", [records.partial_statistics(records.concat(batches, "train"))])
    expected = {
        "shards": shards,
        "splits": [json.loads(json.dumps(whole))],
        "reject_files": ["a", "b"],
        "damaged": [],
        "duplicates": {
            "exact": [[["a.jpg", "train", 0], ["b.jpg", "train", 0]]],
            "near": [[["a.jpg", "train", 0], ["b.jpg", "train", 0], ["c.jpg", "train", 0]]],
        },
        "unselected": 5,
        "fingerprint": f"{5:064x}",
    }

    def written(_) -> dict:
        summary = json.loads(pathlib.Path(path).read_text())
        return summary | {
            "shards": sorted(summary["shards"], key=lambda s: s["index"]),
            "reject_files": sorted(summary["reject_files"]),
        }

    with TestPipeline() as pipeline:
        stage_outputs = tuple(
            pipeline | f"From {kind}" >> beam.Create([(kind, value) for value in values])
            for kind, values in tagged.items()
        )
        summary = stage_outputs | stages.Summarize(path) | beam.Map(written)
        assert_that(summary, equal_to([expected]))


def test_write_rejects_writes_sorted_files_that_merge_in_path_order(tmp_path):
    """Rejects (a non-UTF-8 name among them) -> files of JSON lines sorted by path, one per bundle; merged with the
    listing's own rejects, rejects.jsonl is in path order and the summary counts them by kind."""
    found = [
        (b"cat.\xff.jpg", "empty file (0 bytes)"),
        (b"dog.2.jpg", "not an image: unrecognized file format"),
        (b"cat.1.jpg", "truncated"),
        ("\u732b.jpg".encode(), "empty file (0 bytes)"),
    ]
    folder = tmp_path / "rejects"
    folder.mkdir()
    with TestPipeline() as pipeline:
        files = pipeline | beam.Create(found) | beam.ParDo(reject_files.WriteRejects(str(folder)))
        lines = files | beam.FlatMap(lambda path: pathlib.Path(path).read_text().splitlines())
        in_order = files | "Sorted" >> beam.Map(
            lambda path: (lambda paths: paths == sorted(paths))(
                [json.loads(line)["path"] for line in pathlib.Path(path).read_text().splitlines()]
            )
        )
        entries = lines | beam.Map(
            lambda line: (
                lambda entry: (  # bytes: Beam's str coder refuses surrogates
                    entry["path"].encode("utf-8", "surrogateescape"),
                    entry["reason"],
                )
            )(json.loads(line))
        )
        assert_that(entries, equal_to(found), label="every reject")
        assert_that(in_order | beam.Distinct(), equal_to([True]), label="each file sorted")
    known = [("link.jpg", "symbolic link, not followed")]
    summary = reject_files.merge([str(p) for p in folder.iterdir()], known, str(tmp_path / "rejects.jsonl"))
    merged = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [entry["path"] for entry in merged] == sorted(
        [p.decode("utf-8", "surrogateescape") for p, _ in found] + ["link.jpg"]
    )
    assert summary.count == 5 and summary.kinds[metadata.reject_kind("empty file (0 bytes)")] == 2


def test_local_workers_share_one_queue_of_read_tasks(tmp_path):
    """Each worker's queue yields the tasks no other worker has taken yet: a worker that frees up early takes more,
    and every task is read exactly once."""
    src = tmp_path / "src"
    write_sample_data(src, n=8, seed=4)
    listing = list_source(str(src))
    tasks = [dataclasses.replace(listing.tasks[0], files=(item,)) for item in listing.tasks[0].files]
    path = str(tmp_path / "tasks.pickle")
    fast, slow = staged.task_queues(staged.stage_tasks(tasks, path), path, 2, str(tmp_path / "claims"))
    fast_reads, slow_reads = fast.read_tasks(), slow.read_tasks()
    taken = [next(slow_reads)] + list(fast_reads)  # the slow worker takes one task while the fast one takes the rest
    assert list(slow_reads) == []
    assert len(taken) == 8 and sorted(t.files[0].path for t in taken) == sorted(t.files[0].path for t in tasks)


def test_threads_of_one_worker_racing_for_tasks_read_each_exactly_once(tmp_path):
    """A worker process may run bundles in several threads, which one process's record lock does not keep apart:
    four threads taking tasks as fast as they can take every one of 3,000 tasks, none twice."""
    write_sample_data(tmp_path / "src", n=8, seed=4)
    template = list_source(str(tmp_path / "src")).tasks[0]  # (3,000 copies named by number, never read)
    tasks = [dataclasses.replace(template, container=str(i)) for i in range(3000)]
    path = str(tmp_path / "tasks.pickle")
    queues = staged.task_queues(staged.stage_tasks(tasks, path), path, 4, str(tmp_path / "claims"))
    go = threading.Barrier(len(queues))

    def take(queue: staged.TaskQueue) -> list[int]:
        go.wait()
        return [int(task.container) for task in queue.read_tasks()]

    with concurrent.futures.ThreadPoolExecutor(len(queues)) as pool:
        taken = list(pool.map(take, queues))
    assert sum(map(bool, taken)) > 1, "several threads took tasks"
    assert sorted(index for each in taken for index in each) == list(range(3000))


TAKE_TASKS = """
import pathlib, pickle, sys, time
queue = pickle.loads(pathlib.Path(sys.argv[1]).read_bytes())
pathlib.Path(sys.argv[2]).touch()  # ready
while not pathlib.Path(sys.argv[3]).exists():  # both start at once
    time.sleep(0.001)
pathlib.Path(sys.argv[2]).write_text("\\n".join(task.container for task in queue.read_tasks()))
"""


def test_two_worker_processes_racing_for_tasks_read_each_exactly_once(tmp_path):
    """Two processes that take tasks from the queue as fast as they can, at the same time: between them they take
    every one of 3,000 tasks, none twice."""
    write_sample_data(tmp_path / "src", n=8, seed=4)
    template = list_source(str(tmp_path / "src")).tasks[0]  # (3,000 copies named by number, never read)
    tasks = [dataclasses.replace(template, container=str(i)) for i in range(3000)]
    path = str(tmp_path / "tasks.pickle")
    queues = staged.task_queues(staged.stage_tasks(tasks, path), path, 2, str(tmp_path / "claims"))
    go, taken = tmp_path / "go", [tmp_path / f"taken{q.worker}" for q in queues]
    workers = []
    for queue, out in zip(queues, taken):
        (tmp_path / f"queue{queue.worker}").write_bytes(pickle.dumps(queue))
        command = [sys.executable, "-c", TAKE_TASKS, str(tmp_path / f"queue{queue.worker}"), str(out), str(go)]
        workers.append(subprocess.Popen(command))
    while not all(out.exists() for out in taken):
        assert all(worker.poll() is None for worker in workers), "a process ended before it was ready"
        time.sleep(0.01)
    go.touch()
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    each = [out.read_text().split() for out in taken]
    assert all(each), "each process took tasks"
    assert sorted(map(int, each[0] + each[1])) == list(range(3000))
