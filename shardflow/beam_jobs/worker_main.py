"""A local Beam worker process that ends as soon as its work is done; with `--fork-server FD`, the process that
forks the job's workers (`fork_server.ForkServer`).

Beam's in-process runner closes its worker processes one after another, waiting for each to exit; a worker that
has imported TensorFlow takes about 0.3 s to tear its interpreter down, time in which nothing is left to do: the
worker's files are closed and its logs flushed when Beam's harness returns.

The fork server imports Beam and the job's code once (about 1 CPU s; without garbage collection, then frozen:
`frozen_imports`), while the launcher builds the job; then, for each line of JSON it reads on stdin (the
environment Beam gives a worker process it starts), it forks a worker that has nothing left to import. On file
descriptor FD it reports "started PID" for each, and "ended PID STATUS" (as `subprocess.Popen.returncode`: -N for
signal N) when one ends; at the end of its stdin it waits for its workers, reports them, and exits.
"""

import json
import logging
import os
import signal
import sys

from shardflow.beam_jobs.fork_server import FORK_SERVER
from shardflow.beam_jobs.frozen_imports import frozen_imports


def main() -> None:
    """Run Beam's SDK harness (in a forked worker, once `_serve_forks` returns in it); once the harness returns
    normally, flush what is buffered and exit at once."""
    with frozen_imports():
        from apache_beam.runners.worker import sdk_worker_main

        import shardflow.beam_jobs.convert  # noqa: F401  (what unpickling the job's functions imports)
    if sys.argv[1:2] == [FORK_SERVER]:
        _serve_forks(int(sys.argv[2]))
    sdk_worker_main.main(sys.argv)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve_forks(reports: int) -> None:
    """Fork a worker per line of stdin; returns only in a worker, with the line's environment set. Ctrl-C is for
    the workers and the launcher: this process ends when its stdin does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, lambda *_: _report_ended(reports, os.WNOHANG))
    while line := sys.stdin.readline():
        pid = os.fork()
        if not pid:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.close(reports)
            nothing = os.open(os.devnull, os.O_RDONLY)
            os.dup2(nothing, 0)
            os.close(nothing)
            os.environ.update(json.loads(line))
            del sys.argv[1:]  # as a worker Beam starts has them: options read from sys.argv find none
            return
        os.write(reports, f"started {pid}\n".encode())
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _report_ended(reports, 0)  # (waiting for each)
    os._exit(0)


def _report_ended(reports: int, options: int) -> None:
    """Report each worker that has ended (with `options` 0: each, as it ends, until none is left)."""
    while True:
        try:
            pid, status = os.waitpid(-1, options)
        except ChildProcessError:
            return
        if not pid:
            return
        os.write(reports, f"ended {pid} {os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    main()
