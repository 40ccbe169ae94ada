"""The tf.data service: decode on other processes or hosts than the trainer's.

`serve` starts a dispatcher on this machine and N worker processes; `distribute` sends a `load` pipeline to
them with `distributed_epoch` processing, so each record is produced once per epoch, by whichever worker is free.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import tensorflow as tf

from shardflow.core import quiet

PROTOCOL = "grpc"


def distribute(dataset: tf.data.Dataset, service: str) -> tf.data.Dataset:
    """Run `dataset` on the tf.data service at `service` ("grpc://host:port"), each element once per epoch."""
    protocol, separator, address = service.partition("://")
    if not separator or protocol != PROTOCOL or not address:
        raise ValueError(f"data_service must look like grpc://host:port, got {service!r}")
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=service
        )
    )


def serve(port: int, workers: int, host: str = "localhost") -> None:
    """Run a dispatcher on `port` (0: any free port) and `workers` worker processes until interrupted (Ctrl-C /
    SIGTERM); the line printed first gives the dispatcher's address, with the port it bound."""
    if workers < 1:
        raise ValueError(f"`workers` must be at least 1, got {workers}")
    dispatcher = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=port, protocol=PROTOCOL)
    )
    address = f"{host}:{dispatcher.target.rsplit(':', 1)[1]}"  # the port bound (port 0 picks a free one)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "shardflow.pipeline.service", "--dispatcher", address], stderr=subprocess.PIPE
        )
        for _ in range(workers)
    ]
    for process in processes:
        quiet.forward_filtered(process.stderr)  # type: ignore[arg-type]  # (stderr=PIPE: a stream)
    print(
        f"tf.data service: dispatcher at {PROTOCOL}://{address}, {workers} worker process(es); "
        f'load(..., data_service="{PROTOCOL}://{address}")',
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while dispatcher:  # sleep in Python, not in join(), so SIGTERM and Ctrl-C get through
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


def _worker(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one tf.data service worker")
    parser.add_argument("--dispatcher", required=True, help="host:port of the dispatcher")
    args = parser.parse_args(argv)
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=args.dispatcher, protocol=PROTOCOL)
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while worker:
        time.sleep(1)


if __name__ == "__main__":
    _worker()
