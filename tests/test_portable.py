"""The Job API path Flink and Spark use: Beam's job server + an external worker pool, all on loopback."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

from shardflow.beam_jobs import job_server
from shardflow.cli import main
from shardflow.core import metadata
from tests.conftest import ctrl_c_as_in_a_terminal, dead_port, last_line, wait_for_output


def start(log, *args: str, python_dir: str | None = None) -> subprocess.Popen:
    """A Beam service in its own process group, its output in the file `log`; workers it spawns run the `python`
    first on its PATH: the one in `python_dir` (the venv's unless given)."""
    python_dir = python_dir or os.path.dirname(sys.executable)
    environment = dict(os.environ, PATH=python_dir + os.pathsep + os.environ["PATH"])
    with open(log, "w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            env=environment,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def workers_python(folder: pathlib.Path, first: str = "", flags: str = "") -> str:
    """The folder `folder`, made, whose `python` runs the shell line `first`, then the venv's Python with `flags`:
    the Python a worker pool started with `python_dir=folder` starts its workers with."""
    folder.mkdir()
    python = folder / "python"
    python.write_text(f'#!/bin/sh\n{first}\nexec {shlex.quote(sys.executable)} {flags} "$@"\n')
    python.chmod(0o755)
    return str(folder)


@contextlib.contextmanager
def job_server_and_pool(
    folder: pathlib.Path, python_dir: str | None = None
) -> Iterator[tuple[list[subprocess.Popen], list[str]]]:
    """Beam's job server and an external worker pool (logs job.log, pool.log in `folder`), and the `convert` flags
    that send a job to them; both stopped on leaving. Each binds a free port itself (port 0) and says which: no
    port is picked before it is bound. The pool's workers run the `python` in `python_dir` (`workers_python`) if
    given, else the venv's."""
    services = [
        start(
            folder / "job.log",
            "apache_beam.runners.portability.local_job_service_main",
            "--port",
            "0",
            "--port_file",
            str(folder / "job.port"),
        ),
        start(
            folder / "pool.log",
            "apache_beam.runners.worker.worker_pool_main",
            "--service_port",
            "0",
            python_dir=python_dir,
        ),
    ]
    try:
        job_port = wait_for_output(folder / "job.port", r"^(\d+)$", services[0]).group(1)
        pool_port = wait_for_output(
            folder / "pool.log", r"worker pool servicer at port: localhost:(\d+)", services[1]
        ).group(1)
        yield (
            services,
            [
                "--runner",
                "PortableRunner",
                "--job_endpoint",
                f"localhost:{job_port}",
                "--environment_type",
                "EXTERNAL",
                "--environment_config",
                f"localhost:{pool_port}",
            ],
        )
    finally:
        for service in services:
            with contextlib.suppress(ProcessLookupError):  # (a test may have killed it)
                os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=30)


@pytest.mark.slow
def test_portable_runner_gives_the_same_dataset_and_shows_its_progress(kaggle_dir, pets_dataset, tmp_path, capsys):
    with job_server_and_pool(tmp_path) as (_, flags):
        assert main(["convert", str(kaggle_dir), str(tmp_path / "portable"), "--name", "pets", *flags]) == 0
    # the pool's workers report through OUT's staging folder: the same lines as a local conversion's (stderr is
    # not a terminal here)
    err = capsys.readouterr().err
    assert "reading images: 60/60, 0 rejected\n" in err and re.search(r"^writing shards: [1-9] shards$", err, re.M)
    # the job server ran the job, and the pool's workers did its work
    assert (
        "Completed job in" in (tmp_path / "job.log").read_text()
        and "with state DONE" in (tmp_path / "job.log").read_text()
    )
    assert "Starting worker with command" in (tmp_path / "pool.log").read_text()
    portable, local = metadata.read(str(tmp_path / "portable")), metadata.read(str(pets_dataset))  # 2 local workers
    assert portable.provenance.runner == "PortableRunner" and local.provenance.runner == "FnApiRunner"
    assert {n: [s.sha256 for s in v.shards] for n, v in portable.splits.items()} == {
        n: [s.sha256 for s in v.shards] for n, v in local.splits.items()
    }
    assert portable.num_records == 60


@pytest.mark.parametrize("given", [[], ["--job_server_timeout", "2"]], ids=["shardflow's wait", "the given wait"])
def test_a_job_endpoint_nobody_listens_on_fails_the_conversion(kaggle_dir, tmp_path, capsys, monkeypatch, given):
    """--runner is obeyed, not dropped: with nothing at the job endpoint there is no dataset (the local runner would
    have made one), and the line says where nothing answered."""
    monkeypatch.setattr(job_server, "CONNECT_SECONDS", 3)  # (60 s for a user: a job server may still be starting)
    holder = dead_port()
    endpoint = f"localhost:{holder.getsockname()[1]}"
    try:
        code = main(
            ["convert", str(kaggle_dir), str(tmp_path / "out"), "--runner", "PortableRunner"]
            + ["--job_endpoint", endpoint, *given]
        )
    finally:
        holder.close()
    assert code == 2
    assert last_line(capsys.readouterr().err) == (
        f"shardflow convert: error: no job server answered at {endpoint} in {3 if not given else 2} s (is it "
        "running, on that port? --job_server_timeout sets how long to wait)"
    )
    assert not (tmp_path / "out").exists()


def test_the_portable_runner_without_a_job_endpoint_is_refused_before_any_work(kaggle_dir, tmp_path, capsys):
    assert main(["convert", str(kaggle_dir), str(tmp_path / "out"), "--runner", "PortableRunner"]) == 2
    assert last_line(capsys.readouterr().err) == (
        "shardflow convert: error: --runner PortableRunner sends the job to a job server: give its --job_endpoint "
        "HOST:PORT"
    )
    assert not (tmp_path / "out").exists()  # (Beam itself said so only once the job was submitted, OUT made)


def test_a_job_on_a_job_server_gets_beams_deadline_only_when_given_one():
    """Beam takes --job_server_timeout (300 s unless given) as the deadline of the job's state stream: shardflow
    gives it 30 days unless the user gives one (the 600,000-image conversion took up to 435 s on a job server)."""
    answering = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    endpoint = f"localhost:{answering.add_insecure_port('localhost:0')}"
    answering.start()
    try:
        on_job_server = ["--runner", "PortableRunner", "--job_endpoint", endpoint]
        assert job_server.job_server_args(on_job_server) == ["--job_server_timeout", str(30 * 24 * 3600)]
        assert job_server.job_server_args([*on_job_server, "--job_server_timeout=600"]) == []
        assert job_server.job_server_args([*on_job_server, "--job-server-timeout", "600"]) == []
    finally:
        answering.stop(grace=None)
    assert job_server.job_server_args(["--runner", "flink", "--flink_master", "[local]"]) == [  # (Beam's own
        "--job_server_timeout",  # job server: its start is Beam's to wait for)
        str(30 * 24 * 3600),
    ]
    assert job_server.job_server_args([]) == job_server.job_server_args(["--runner", "DirectRunner"]) == []


@pytest.mark.slow
def test_a_job_server_that_dies_mid_job_fails_the_conversion_saying_why(kaggle_dir, tmp_path):
    out = tmp_path / "out"
    with job_server_and_pool(tmp_path) as (services, flags):
        run = subprocess.Popen(
            [sys.executable, "-m", "shardflow.cli", "convert", str(kaggle_dir), str(out), *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_output(tmp_path / "pool.log", "Starting worker with command", services[1])  # the job runs
        os.killpg(services[0].pid, signal.SIGKILL)
        _, err = run.communicate(timeout=120)
    assert run.returncode == 2  # (after the traceback of Beam's thread that read the job's messages)
    assert re.fullmatch(
        r"shardflow convert: error: the Beam job failed: the connection to the runner ended: UNAVAILABLE: "
        rf"[^\n]+ \({re.escape(str(out))} is left incomplete\)",
        last_line(err),
    ), err[-3000:]
    with pytest.raises(metadata.DatasetError):
        metadata.read(str(out))


@pytest.mark.slow
def test_a_job_longer_than_the_job_server_timeout_says_to_pass_a_longer_one(kaggle_dir, tmp_path):
    out = tmp_path / "out"
    slow_start = workers_python(tmp_path / "slow-python", first="sleep 10")  # (a cold container's start)
    with job_server_and_pool(tmp_path, python_dir=slow_start) as (_, flags):
        run = subprocess.run(
            [sys.executable, "-m", "shardflow.cli", "convert", str(kaggle_dir), str(out), *flags]
            + ["--job_server_timeout", "2"],  # (for the whole job, as Beam takes it: it lasts 10 s and more)
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 2
    assert re.fullmatch(
        r"shardflow convert: error: the Beam job failed: the connection to the runner ended: DEADLINE_EXCEEDED: "
        rf"[^\n]+; a job on a job server may run --job_server_timeout seconds: pass more \({re.escape(str(out))} "
        r"is left incomplete\)",
        last_line(run.stderr),
    ), run.stderr[-3000:]


@pytest.mark.slow
def test_a_pool_whose_workers_cannot_start_is_said_and_ctrl_c_cancels_the_job(kaggle_dir, tmp_path):
    """The pool starts its workers with a `python` that has no Beam: each dies at once, and the job server waits
    for them without end. The conversion says so once no worker has reported for `SILENT_SECONDS` (3 here, 60
    for a user), and Ctrl-C ends it, cancels the job and says OUT is incomplete."""
    no_beam = workers_python(tmp_path / "no-beam", flags="-S")  # -S: no site-packages
    out, err = tmp_path / "out", tmp_path / "stderr.txt"
    launcher = "import sys; from shardflow.beam_jobs import progress; progress.SILENT_SECONDS = 3; "
    launcher += "from shardflow.command import main; sys.exit(main())"
    with job_server_and_pool(tmp_path, python_dir=no_beam) as (services, flags), open(err, "w") as stderr:
        run = subprocess.Popen(
            ctrl_c_as_in_a_terminal([sys.executable, "-c", launcher, "convert", str(kaggle_dir), str(out), *flags]),
            stderr=stderr,
        )
        try:
            wait_for_output(tmp_path / "pool.log", "No module named", services[1])  # (each worker's death)
            wait_for_output(err, "no worker has reported after 3 s", run)
            run.send_signal(signal.SIGINT)
            assert run.wait(timeout=60) == 130, err.read_text()
        finally:
            run.kill()
        # the job is cancelled, not left to the job server (where it would go on writing into OUT's staging folder)
        with grpc.insecure_channel(flags[flags.index("--job_endpoint") + 1]) as channel:
            jobs = beam_job_api_pb2_grpc.JobServiceStub(channel).GetJobs(beam_job_api_pb2.GetJobsRequest(), timeout=10)
        assert [job.state for job in jobs.job_info] == [beam_job_api_pb2.JobState.CANCELLED]
    text = err.read_text()
    assert "Beam and shardflow" in text and "Ctrl-C stops the conversion and cancels the job" in text, text
    assert "the runner's job is cancelled" in text, text
    assert last_line(text) == f"shardflow convert: interrupted; {out} is incomplete, rerun with --overwrite", text
    with pytest.raises(metadata.DatasetError):
        metadata.read(str(out))
