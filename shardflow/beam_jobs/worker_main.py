"""A local Beam worker process that ends as soon as its work is done; with `--warm`, started ahead of its job.

Beam's in-process runner closes its worker processes one after another, waiting for each to exit; a worker that
has imported TensorFlow takes about 0.3 s to tear its interpreter down, time in which nothing is left to do: the
worker's files are closed and its logs flushed when Beam's harness returns.
"""

import json
import logging
import os
import sys

from apache_beam.runners.worker import sdk_worker_main

from shardflow.beam_jobs.local_workers import WARM


def main() -> None:
    """Run Beam's SDK harness; once it returns normally, flush what is buffered and exit at once."""
    if sys.argv[1:] == [WARM]:
        _wait_for_the_job()
    sdk_worker_main.main(sys.argv)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _wait_for_the_job() -> None:
    """Import the job's code, then wait for the environment Beam gives a worker process (`WarmWorkers`);
    without one (the launcher closed the pipe), exit."""
    import shardflow.beam_jobs.convert  # noqa: F401  (what unpickling the job's functions imports)

    line = sys.stdin.readline()
    if not line:
        os._exit(0)
    os.environ.update(json.loads(line))
    del sys.argv[1:]  # as a worker Beam starts has them: options read from sys.argv find none


if __name__ == "__main__":
    main()
