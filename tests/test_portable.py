"""The Job API path Flink and Spark use: Beam's job server + an external worker pool, all on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from shardflow.cli import main
from shardflow.core import metadata
from tests.conftest import dead_port, wait_for_output


def start(log, *args: str) -> subprocess.Popen:
    """A Beam service in its own process group, its output in the file `log`; workers it spawns run `python`, so
    the venv comes first."""
    environment = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    with open(log, "w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            env=environment,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_portable_runner_gives_the_same_dataset(kaggle_dir, pets_dataset, tmp_path):
    # Each service binds a free port itself (port 0) and says which: no port is picked before it is bound.
    services = [
        start(
            tmp_path / "job.log",
            "apache_beam.runners.portability.local_job_service_main",
            "--port",
            "0",
            "--port_file",
            str(tmp_path / "job.port"),
        ),
        start(tmp_path / "pool.log", "apache_beam.runners.worker.worker_pool_main", "--service_port", "0"),
    ]
    try:
        job_port = wait_for_output(tmp_path / "job.port", r"^(\d+)$", services[0]).group(1)
        pool_port = wait_for_output(
            tmp_path / "pool.log", r"worker pool servicer at port: localhost:(\d+)", services[1]
        ).group(1)
        assert (
            main(
                [
                    "convert",
                    str(kaggle_dir),
                    str(tmp_path / "portable"),
                    "--name",
                    "pets",
                    "--runner",
                    "PortableRunner",
                    "--job_endpoint",
                    f"localhost:{job_port}",
                    "--environment_type",
                    "EXTERNAL",
                    "--environment_config",
                    f"localhost:{pool_port}",
                ]
            )
            == 0
        )
    finally:
        for service in services:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=30)
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


@pytest.mark.slow
def test_a_job_endpoint_nobody_listens_on_fails_the_conversion(kaggle_dir, tmp_path, capsys):
    """--runner is obeyed, not dropped: with nothing at the job endpoint there is no dataset (the local runner would
    have made one)."""
    holder = dead_port()
    try:
        code = main(
            [
                "convert",
                str(kaggle_dir),
                str(tmp_path / "out"),
                "--runner",
                "PortableRunner",
                "--job_endpoint",
                f"localhost:{holder.getsockname()[1]}",
                "--job_server_timeout",
                "5",
            ]
        )
    finally:
        holder.close()
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("shardflow convert: error: ") and "Traceback" not in error
    with pytest.raises(metadata.DatasetError):
        metadata.read(str(tmp_path / "out"))
