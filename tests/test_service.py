"""The tf.data service on loopback: `shardflow serve-data` with 2 worker processes decodes one epoch, quietly."""

from __future__ import annotations

import hashlib
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from shardflow.cli import main
from shardflow.core import metadata
from shardflow.pipeline import load
from shardflow.pipeline.service import distribute
from tests.conftest import wait_for_output
from tests.test_reader import graph_ops

# Reads a split through the service named on the command line, one line per batch (run as a separate process: a
# tf.data service client waits for an unreachable dispatcher forever, and a test cannot interrupt it in-process).
READER = """
import sys
from shardflow.pipeline import load
print("imported", flush=True)
dataset = load(sys.argv[1], "train", batch_size=7, image_size=24, shuffle=False, data_service=sys.argv[2])
for images, labels in dataset:
    print("batch of", len(labels), flush=True)
"""


def fingerprints(dataset) -> list[str]:
    return sorted(
        hashlib.sha1(image.tobytes()).hexdigest() + str(label)
        for images, labels in dataset
        for image, label in zip(images.numpy(), labels.numpy())
    )


@pytest.mark.slow
def test_one_epoch_through_the_service_yields_every_record_once(pets_in_shards, tmp_path):
    train = metadata.read(str(pets_in_shards)).split("train")
    assert len(train.shards) > 1  # the workers share them out
    out, err = tmp_path / "serve-data.out", tmp_path / "serve-data.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:  # files, not pipes: nothing blocks on a full pipe
        server = subprocess.Popen(
            [sys.executable, "-m", "shardflow.cli", "serve-data", "--port", "0", "--workers", "2"],
            stdout=stdout,
            stderr=stderr,
        )
    try:
        local = fingerprints(load(str(pets_in_shards), "train", batch_size=7, image_size=24, shuffle=False))
        assert len(local) == train.num_examples  # (read here while the server starts)
        port = wait_for_output(out, r"dispatcher at grpc://localhost:(\d+)", server).group(1)  # the port it bound
        service = f"grpc://localhost:{port}"
        remote = load(str(pets_in_shards), "train", batch_size=7, image_size=24, shuffle=False, data_service=service)
        assert any(op.startswith("DataServiceDataset") for op in graph_ops(remote)), "the graph skips the service"
        assert fingerprints(remote) == local
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert err.read_text() == "", "TensorFlow's start-up chatter from the worker processes reached the terminal"

    # The server is gone: the same pipeline gives nothing (a `load` that read the shards itself would).
    log = tmp_path / "reader.out"
    with open(log, "w") as stdout:
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(pets_in_shards), service], stdout=stdout, stderr=subprocess.DEVNULL
        )
    try:
        wait_for_output(log, "imported", reader)
        time.sleep(5)  # a local read of these 30 records takes about a second (a tf.data service client waits
        # for its dispatcher: `load` registers the pipeline with it)
        assert "batch of" not in log.read_text() and reader.poll() != 0, log.read_text()
    finally:
        reader.kill()
        reader.wait()


def test_bad_service_address():
    with pytest.raises(ValueError, match="grpc://host:port"):
        distribute(tf.data.Dataset.range(3), "localhost:5000")


def _listening(pids: set[int]) -> list[str]:
    """The local addresses (`ss -ltnp`) on which the processes `pids` listen for TCP connections."""
    table = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [
        line.split()[3] for line in table.splitlines() if {int(pid) for pid in re.findall(r"pid=(\d+)", line)} & pids
    ]


def _children(pid: int) -> set[int]:
    found = set()
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs iproute2's ss")
def test_the_start_line_says_who_can_reach_the_servers_and_it_is_true(tmp_path):
    """The servers listen on every interface, with no authentication; the start line says so, and how to keep
    them private. ss shows the dispatcher and the worker on 0.0.0.0 (or [::]): what the line says is true."""
    out = tmp_path / "serve-data.out"
    with open(out, "w") as stdout:
        server = subprocess.Popen(
            [sys.executable, "-m", "shardflow.cli", "serve-data", "--port", "0", "--workers", "1"],
            stdout=stdout,
            stderr=subprocess.DEVNULL,
        )
    try:
        line = wait_for_output(out, r"dispatcher at grpc://localhost:(\d+).*\n", server).group(0)
        port = line.split("localhost:", 1)[1].split(",", 1)[0]
        for said in ("every network interface", "no authentication", "trusted network only", "firewall"):
            assert said in line, line
        deadline = time.monotonic() + 60
        while len(addresses := _listening({server.pid} | _children(server.pid))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # (the worker process starts TensorFlow first)
        assert any(address.endswith(f":{port}") for address in addresses), addresses
        assert len(addresses) >= 2 and all(address.rsplit(":", 1)[0] in ANY_INTERFACE for address in addresses), (
            addresses
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


ANY_INTERFACE = ("0.0.0.0", "*", "[::]")


def test_serve_data_help_says_it_listens_everywhere(capsys):
    with pytest.raises(SystemExit):
        main(["serve-data", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "every network interface" in text and "no authentication" in text and "firewall" in text
    assert "--host " not in text and "--host]" not in text  # (no flag that does nothing: TensorFlow binds all)
