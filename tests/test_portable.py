"""The Job API path Flink and Spark use: Beam's job server + an external worker pool, all on loopback."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from shardflow.cli import main
from shardflow.core import metadata
from tests.conftest import free_ports


def start(*args: str) -> subprocess.Popen:
    """A Beam service in its own process group; workers it spawns run `python`, so the venv comes first."""
    environment = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    return subprocess.Popen([sys.executable, "-m", *args], env=environment, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


def test_portable_runner_gives_the_same_dataset(kaggle_dir, pets_dataset, tmp_path):
    job_port, pool_port = free_ports(2)
    services = [start("apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)),
                start("apache_beam.runners.worker.worker_pool_main", "--service_port", str(pool_port))]
    try:
        wait_for_port(job_port)
        wait_for_port(pool_port)
        assert main(["convert", str(kaggle_dir), str(tmp_path / "portable"), "--name", "pets",
                     "--runner", "PortableRunner", "--job_endpoint", f"localhost:{job_port}",
                     "--environment_type", "EXTERNAL", "--environment_config", f"localhost:{pool_port}"]) == 0
    finally:
        for service in services:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=30)
    portable, local = metadata.read(str(tmp_path / "portable")), metadata.read(str(pets_dataset))  # 2 local workers
    assert {n: [s.sha256 for s in v.shards] for n, v in portable.splits.items()} == \
        {n: [s.sha256 for s in v.shards] for n, v in local.splits.items()}
    assert portable.num_records == 60
