"""The tf.data service: decode on other processes or hosts than the trainer's.

`serve` starts a dispatcher on this machine and N worker processes; `distribute` sends a `load` pipeline to
them with `distributed_epoch` processing, so each record is produced once per epoch, by whichever worker is free.

Exposure: TensorFlow's data servers listen on every network interface (its C++ server binds "0.0.0.0:PORT";
neither `DispatcherConfig` nor `WorkerConfig` takes an address to bind: `worker_address` is only the address a
worker gives the dispatcher), with no authentication, and a worker runs whatever dataset graph a client sends
(graphs can read and write files). So: trusted networks only, the ports kept private by a firewall or a private
network. `EXPOSURE` says so where the service starts.
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
EXPOSURE = (
    "listening on every network interface (the dispatcher's port and each worker's own; TensorFlow cannot bind "
    "one address) with no authentication: whoever reaches these ports can run any dataset graph on this machine, "
    "so use it on a trusted network only, and keep the ports private (a firewall, a private network)"
)


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
    SIGTERM); the line printed first gives the dispatcher's address, with the port it bound, and says who can
    reach it (`EXPOSURE`: every interface, no authentication). `host` is only the name the workers and that line
    give the dispatcher; the servers listen on every interface whatever it is."""
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
        f'load(..., data_service="{PROTOCOL}://{address}"); {EXPOSURE}',
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
