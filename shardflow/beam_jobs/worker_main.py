"""A local Beam worker process that ends as soon as its work is done.

Beam's in-process runner closes its worker processes one after another, waiting for each to exit; a worker that
has imported TensorFlow takes about 0.3 s to tear its interpreter down, time in which nothing is left to do: the
worker's files are closed and its logs flushed when Beam's harness returns.
"""

import logging
import os
import sys

from apache_beam.runners.worker import sdk_worker_main


def main() -> None:
    """Run Beam's SDK harness; once it returns normally, flush what is buffered and exit at once."""
    sdk_worker_main.main(sys.argv)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
