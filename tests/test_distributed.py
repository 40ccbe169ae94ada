"""Two local CPU workers train together with MultiWorkerMirroredStrategy (TF_CONFIG on loopback)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import free_ports


def test_two_workers_train_together(tiny_pets, tmp_path):
    workers = [f"localhost:{port}" for port in free_ports(2)]
    jobs = []
    for index in range(2):
        environment = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        jobs.append(subprocess.Popen(
            [sys.executable, "-m", "shardflow.cli", "train", str(tiny_pets), "--out",
             str(tmp_path / f"run{index}"), "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "8",
             "--image-size", "32", "--seed", "0"],
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [job.communicate(timeout=240)[0] for job in jobs]
    finally:
        for job in jobs:
            job.kill()
    for job, output in zip(jobs, outputs):
        assert job.returncode == 0, output[-6000:]
    for index in range(2):
        metrics = json.loads((tmp_path / f"run{index}" / "metrics.json").read_text())
        assert metrics["strategy"] == "MultiWorkerMirroredStrategy" and metrics["replicas"] == 2
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["images_per_second"][0] > 0
    assert (tmp_path / "run0" / "model.keras").exists()  # the chief keeps the checkpoint
