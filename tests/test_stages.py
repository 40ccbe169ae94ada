"""The conversion's stages alone, as Beam's own examples test theirs: `TestPipeline` and `assert_that`."""
from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from shardflow.beam_jobs import staged, stages
from shardflow.beam_jobs.sources import list_source
from shardflow.images import ImageOptions
from shardflow.sample_data import write_sample_data


def _prepared(pipeline, src, fractions: dict[str, float], staging: str):
    """ReadAndPrepare's outputs for the images in `src`."""
    listing = list_source(str(src))
    tasks = staged.stage_tasks(listing.tasks, f"{staging}-tasks.pickle")
    return pipeline | beam.Create(tasks) | stages.ReadAndPrepare(listing.class_names, ImageOptions(), fractions,
                                                                 staging)


def test_read_and_prepare_then_plan_shards(tmp_path):
    src = tmp_path / "src"
    write_sample_data(src, n=20, seed=9)
    (src / "cat.broken.jpg").write_bytes(b"")
    staging = str(tmp_path / "staging")
    with TestPipeline() as pipeline:
        prepared = _prepared(pipeline, src, {"train": 0.5, "test": 0.5}, staging)
        records = prepared.records | "Count" >> beam.Map(lambda item: (item[0], len(staged.load(item[1])))) \
            | beam.CombinePerKey(sum) | beam.Values() | beam.CombineGlobally(sum)
        assert_that(records, equal_to([20]), label="every good image is a record")
        reasons = prepared[stages.PrepareRecords.REJECTS] | beam.Map(lambda reject: reject[1])
        assert_that(reasons, equal_to(["empty file (0 bytes)"]), label="the broken one is a reject")
        planned = prepared.records | stages.PlanShards(shard_bytes=60_000, num_ranges=1, batch_dir=staging)
        splits = planned["stats"] | beam.Map(lambda stats: (stats["split"], stats["num_examples"]))
        total = splits | "Examples" >> beam.Values() | "Total" >> beam.CombineGlobally(sum)
        assert_that(total, equal_to([20]), label="statistics")
        shards = planned["jobs"] | beam.Map(lambda job: job.num_shards > 1) | beam.Distinct()
        assert_that(shards, equal_to([True]), label="small shards: several per split")


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
            shards = (planned["jobs"] | f"Write{ranges}" >> stages.WriteShards(f"{staging}/shards{ranges}", "pets")
                      | f"Describe{ranges}" >> beam.Map(lambda s: (s["filename"], s["num_records"], s["sha256"])))
            stats = planned["stats"] | f"Stats{ranges}" >> beam.Map(lambda s: repr(sorted(s.items())))
            outcomes.append(((shards, stats) | f"All{ranges}" >> beam.Flatten()
                             | f"Sorted{ranges}" >> beam.combiners.ToList() | f"Key{ranges}" >> beam.Map(lambda items: sorted(map(repr, items)))))
        one, *others = outcomes
        for index, other in enumerate(others):
            both = (one, other) | f"Pair{index}" >> beam.Flatten() | f"Distinct{index}" >> beam.Map(repr) \
                | f"Unique{index}" >> beam.Distinct() | f"Count{index}" >> beam.combiners.Count.Globally()
            assert_that(both, equal_to([1]), label=f"same as one range ({index})")


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
