"""The local runner's worker processes (`local_runner`): started before the job is submitted, so that they import
while the launcher builds it; the job runs in them, and none is left running after it."""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from shardflow.beam_jobs.local_workers import local_beam_args, local_runner, worker_processes


def test_the_job_runs_in_the_worker_processes_started_before_it(tmp_path):
    with local_runner(2) as runner:
        started = worker_processes()
        assert len(started) == 2
        with beam.Pipeline(runner=runner, options=PipelineOptions(local_beam_args(2))) as pipeline:
            _ = (
                pipeline
                | beam.Create(range(40))
                | beam.Reshuffle()
                | beam.Map(lambda _, folder: open(os.path.join(folder, str(os.getpid())), "w").close(), str(tmp_path))
            )
    ran_in = {int(path.name) for path in tmp_path.iterdir()}
    assert ran_in and ran_in <= {process.pid for process in started}
    assert not any(process.is_running() for process in started)


def test_worker_processes_no_job_took_are_stopped():
    with local_runner(2):
        idle = worker_processes()
        assert len(idle) == 2
    assert not any(process.is_running() for process in idle) and not worker_processes()
