"""Two local CPU workers train together with MultiWorkerMirroredStrategy (TF_CONFIG on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import PORT_CLASH, free_ports, retry_on_port_clash

pytestmark = pytest.mark.slow


def links(jobs: list[subprocess.Popen], ports: list[int]) -> set[tuple[int, int]]:
    """(i, j) for each worker i with an open TCP connection to worker j's port (gRPC between the workers)."""
    found = set()
    for i, job in enumerate(jobs):
        try:
            connections = psutil.Process(job.pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        for connection in connections:
            if connection.status == psutil.CONN_ESTABLISHED and connection.raddr:
                found |= {(i, j) for j, port in enumerate(ports) if j != i and connection.raddr.port == port}
    return found


def train_together(data, tmp_path) -> tuple[list[str], set[tuple[int, int]]] | None:
    """Both workers' output and the connections seen between them; None when a port was taken meanwhile."""
    ports = free_ports(2)
    jobs, logs = [], [tmp_path / f"worker{index}.log" for index in range(2)]
    for index in range(2):
        cluster = {"worker": [f"localhost:{port}" for port in ports]}
        environment = dict(
            os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        )
        with open(logs[index], "w") as log:  # a file: a pipe nobody reads while polling would fill up
            jobs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "shardflow.cli",
                        "train",
                        str(data),
                        "--out",
                        str(tmp_path / f"run{index}"),
                        "--overwrite",
                        "--epochs",
                        "1",
                        "--steps-per-epoch",
                        "3",
                        "--batch-size",
                        "8",
                        "--image-size",
                        "32",
                        "--seed",
                        "0",
                    ],
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    seen: set[tuple[int, int]] = set()
    try:
        deadline = time.monotonic() + 240
        while (
            any(job.poll() is None for job in jobs)
            and not any(job.poll() for job in jobs)
            and time.monotonic() < deadline
        ):  # (one that failed leaves the other waiting for it)
            seen |= links(jobs, ports)
            time.sleep(0.2)
    finally:
        for job in jobs:
            job.kill()
            job.wait()
    outputs = [log.read_text() for log in logs]
    if any(clash in output for clash in PORT_CLASH for output in outputs):
        return None
    for job, output in zip(jobs, outputs):
        assert job.returncode == 0, output[-6000:]
    return outputs, seen


def test_two_workers_train_together(tiny_pets, tmp_path):
    outputs, seen = retry_on_port_clash(lambda: train_together(tiny_pets, tmp_path))
    assert seen, "the two workers never connected to each other"
    histories = []
    for index in range(2):
        metrics = json.loads((tmp_path / f"run{index}" / "metrics.json").read_text())
        assert metrics["strategy"] == "MultiWorkerMirroredStrategy" and metrics["replicas"] == 2
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["images_per_second"][0] > 0
        histories.append(json.loads((tmp_path / f"run{index}" / "history.json").read_text()))
    # both report the same losses and accuracies: the sums over both workers' batches, exchanged between them
    assert histories[0] == histories[1] and len(histories[0]["loss"]) == 1
    assert (tmp_path / "run0" / "model.keras").exists()  # the chief keeps the checkpoint
