"""The local runner's worker processes (`local_runner`): a fork server started before the job is submitted, so
that it imports while the launcher builds the job (the CLI's, while the launcher imports Beam: `started_ahead`);
the job runs in workers it forks, and none is left after it."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
from ast import literal_eval

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.beam_jobs.fork_server import ForkServer, started_ahead
from shardflow.beam_jobs.frozen_imports import frozen_imports
from shardflow.beam_jobs.local_workers import local_beam_args, local_runner, worker_processes
from shardflow.core import metadata


def test_the_job_runs_in_workers_forked_by_the_server_started_before_it(tmp_path):
    with local_runner(2) as runner:
        (server,) = worker_processes()  # before the job: the fork server alone
        with beam.Pipeline(runner=runner, options=PipelineOptions(local_beam_args(2))) as pipeline:
            _ = (
                pipeline
                | beam.Create(range(40))
                | beam.Reshuffle()
                | beam.Map(
                    lambda _, folder: open(os.path.join(folder, f"{os.getpid()} {os.getppid()}"), "w").close(),
                    str(tmp_path),
                )
            )
    ran_in = [tuple(map(int, path.name.split())) for path in tmp_path.iterdir()]
    assert ran_in and {parent for _, parent in ran_in} == {server.pid}
    assert server.pid not in {pid for pid, _ in ran_in}
    assert not server.is_running() and not worker_processes()


def test_the_workers_collect_garbage_but_not_what_their_imports_made(tmp_path):
    """Beam's and the job's code, imported once by the fork server, are frozen (`gc.freeze`): a worker's full
    collections skip them, and its collector still runs for what the job makes."""
    with local_runner(2) as runner, beam.Pipeline(runner=runner, options=PipelineOptions(local_beam_args(2))) as p:
        _ = (
            p
            | beam.Create(range(8))
            | beam.Reshuffle()
            | beam.Map(lambda _: (gc.isenabled(), gc.get_freeze_count()))
            | beam.Map(lambda state, folder: open(os.path.join(folder, repr(state)), "w").close(), str(tmp_path))
        )
    states = {literal_eval(path.name) for path in tmp_path.iterdir()}
    assert states and all(enabled and frozen > 50_000 for enabled, frozen in states)


def test_frozen_imports_collect_nothing_meanwhile_and_freeze_what_they_made():
    before = gc.get_freeze_count()
    try:
        with frozen_imports():
            assert not gc.isenabled()
            made = [[index] for index in range(1000)]
        assert gc.isenabled() and gc.get_freeze_count() >= before + len(made)
    finally:
        gc.unfreeze()


def test_a_fork_server_no_job_used_is_stopped():
    with local_runner(2):
        (idle,) = worker_processes()
    assert not idle.is_running() and not worker_processes()


def test_a_dead_fork_server_answers_every_worker_asked_of_it():
    server = ForkServer()
    try:
        (process,) = worker_processes()
        process.kill()
        answers: list[int | None] = []
        for _ in range(2):  # (the second used to wait for ever)
            asking = threading.Thread(target=lambda: answers.append(server.hand_over({})), daemon=True)
            asking.start()
            asking.join(timeout=30)
        assert answers == [None, None] and server.wait(None) == -signal.SIGKILL
    finally:
        server.close()


def test_a_conversion_takes_the_fork_server_started_ahead_of_it(kaggle_dir, tmp_path):
    with started_ahead():
        (ahead,) = worker_processes()
        info = convert(str(kaggle_dir), str(tmp_path / "out"), ConvertOptions(workers=2))
        assert not ahead.is_running() and not worker_processes()  # the job ran in its workers, and stopped it
    assert info.num_records == 60 == metadata.read(str(tmp_path / "out")).num_records


def test_a_fork_server_started_ahead_that_no_job_takes_is_stopped():
    with started_ahead():
        (idle,) = worker_processes()
    assert not idle.is_running() and not worker_processes()


def test_the_cli_can_start_the_fork_server_before_it_imports_beam():
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, shardflow.cli, shardflow.beam_jobs.fork_server, shardflow.beam_jobs.options\n"
            "print(*(name for name in sys.modules if name.startswith('apache_beam')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert imported == []
