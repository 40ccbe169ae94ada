"""The tf.data service on loopback: `shardflow serve-data` with 2 worker processes decodes one epoch, quietly."""
from __future__ import annotations

import hashlib
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from shardflow.core import metadata
from shardflow.pipeline import load
from shardflow.pipeline.service import distribute
from tests.conftest import free_ports


def fingerprints(dataset) -> list[str]:
    return sorted(hashlib.sha1(image.tobytes()).hexdigest() + str(label)
                  for images, labels in dataset for image, label in zip(images.numpy(), labels.numpy()))


def test_one_epoch_through_the_service_yields_every_record_once(pets_in_shards):
    train = metadata.read(str(pets_in_shards)).split("train")
    assert len(train.shards) > 1  # the workers share them out
    (port,) = free_ports(1)
    server = subprocess.Popen([sys.executable, "-m", "shardflow.cli", "serve-data", "--port", str(port),
                               "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        local = fingerprints(load(str(pets_in_shards), "train", batch_size=7, image_size=24, shuffle=False))
        assert len(local) == train.num_examples  # (read here while the server starts)
        assert "dispatcher at grpc://" in server.stdout.readline()
        remote = load(str(pets_in_shards), "train", batch_size=7, image_size=24, shuffle=False,
                      data_service=f"grpc://localhost:{port}")
        assert fingerprints(remote) == local
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    assert stderr == "", "TensorFlow's start-up chatter from the worker processes reached the terminal"


def test_bad_service_address():
    with pytest.raises(ValueError, match="grpc://host:port"):
        distribute(tf.data.Dataset.range(3), "localhost:5000")
