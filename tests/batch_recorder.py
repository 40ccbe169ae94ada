"""`shardflow train` in this process, its batches observed: `python batch_recorder.py cli|api RECORD KILL_AT ARGS...`
runs the CLI (`cli`) or `train(data, out, TrainOptions)` (`api`) with ARGS, Keras' own train step wrapped to append
each step's batch (its labels and an MD5 of its images) as a JSON line to RECORD, and sends this process SIGTERM
(SIG$SIGNAL) as step KILL_AT (0: never) runs; each step takes at least $STEP_SECONDS. The API's `Interrupted` exits
as the CLI does: 128 + the signal."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time

import keras
import tensorflow as tf

from shardflow import cli
from shardflow.trainers import options, resume, train


def observe(record: str, kill_at: int) -> None:
    """Wrap `keras.Model.train_step` to record each batch before it trains on it."""
    real, steps, pause = keras.Model.train_step, [0], float(os.environ.get("STEP_SECONDS", 0))

    def write(images: tf.Tensor, labels: tf.Tensor) -> None:
        steps[0] += 1
        line = {"labels": labels.numpy().tolist(), "images": hashlib.md5(images.numpy().tobytes()).hexdigest()}
        with open(record, "a") as f:
            f.write(json.dumps(line) + "\n")
        time.sleep(pause)
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.Signals["SIG" + os.environ.get("SIGNAL", "TERM")])

    def train_step(self, data):
        tf.py_function(write, [data[0], data[1]], [])
        return real(self, data)

    keras.Model.train_step = train_step


def main(mode: str, record: str, kill_at: str, *args: str) -> int:
    observe(record, int(kill_at))
    if mode == "cli":
        return cli.main(["train", *args])
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    parsed = parser.parse_args(args)
    try:
        train.train(parsed.data, parsed.out, options.from_arguments(parsed))
    except resume.Interrupted as interrupted:
        return 128 + interrupted.signum
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
