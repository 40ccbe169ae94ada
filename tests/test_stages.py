"""The conversion's stages alone, as Beam's own examples test theirs: `TestPipeline` and `assert_that`."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from shardflow.beam_jobs import staged, stages
from shardflow.beam_jobs.sources import list_source
from shardflow.images import ImageOptions
from shardflow.sample_data import write_sample_data


def test_read_and_prepare_then_plan_shards(tmp_path):
    src = tmp_path / "src"
    write_sample_data(src, n=20, seed=9)
    (src / "cat.broken.jpg").write_bytes(b"")
    listing = list_source(str(src))
    staging = str(tmp_path / "staging")
    tasks = staged.stage_tasks(listing.tasks, str(tmp_path / "tasks.pickle"))
    with TestPipeline() as pipeline:
        prepared = (pipeline | beam.Create(tasks)
                    | stages.ReadAndPrepare(listing.class_names, ImageOptions(), {"train": 0.5, "test": 0.5}, staging))
        records = prepared.records | "Count" >> beam.Map(lambda item: (item[0], len(staged.load(item[1])))) \
            | beam.CombinePerKey(sum) | beam.Values() | beam.CombineGlobally(sum)
        assert_that(records, equal_to([20]), label="every good image is a record")
        reasons = prepared[stages.PrepareRecords.REJECTS] | beam.Map(lambda reject: reject[1])
        assert_that(reasons, equal_to(["empty file (0 bytes)"]), label="the broken one is a reject")
        planned = prepared.records | stages.PlanShards(shard_bytes=60_000, batch_dir=staging)
        splits = planned.stats | beam.Map(lambda stats: (stats["split"], stats["num_examples"] > 0))
        assert_that(splits, equal_to([("train", True), ("test", True)]), label="statistics per split")
        shards = planned.jobs | beam.Map(lambda job: job.num_shards > 1) | beam.Distinct()
        assert_that(shards, equal_to([True]), label="small shards: several per split")
