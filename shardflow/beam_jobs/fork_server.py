"""The fork server of a local conversion's workers (`ForkServer`): one process that imports Beam and the job's code
once, then forks each worker the job asks for, which has nothing left to import.

Needs no Beam: `started_ahead` starts a fork server (and the `WorkerLog` it writes to) before this process imports
Beam, so that both import side by side; the CLI does this for every local conversion with several workers (300
photos: 0.6 s sooner done). The next such job in this process takes it (`take_started`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import NamedTuple

from shardflow.beam_jobs.worker_log import WorkerLog

STOP_SECONDS = 3.0
WORKER_MODULE = "shardflow.beam_jobs.worker_main"  # in the command line of every local Beam worker
FORK_SERVER = "--fork-server"  # its flag (and a file descriptor): it forks the job's workers (`ForkServer`)


class ForkServer:
    """One process (`WORKER_MODULE` with `FORK_SERVER`) that imports Beam and the job's code as soon as it starts,
    then forks each worker handed the environment Beam gives a worker process; it reports each worker's pid, and
    its exit status when it ends, through a pipe that a thread here reads. Its workers write to `stderr` (a file
    descriptor; None: this process's)."""

    def __init__(self, stderr: int | None = None) -> None:
        self.id = uuid.uuid4().hex
        read_end, write_end = os.pipe()
        self._process = subprocess.Popen(  # (its pipes are not inheritable: no other child gets them)
            [sys.executable, "-m", WORKER_MODULE, FORK_SERVER, str(write_end)],
            stdin=subprocess.PIPE,
            stderr=stderr,
            pass_fds=[write_end],
        )
        os.close(write_end)
        self._lock = threading.Lock()  # one hand-over at a time: its answer is the next "started"
        self._started: queue.Queue[int | None] = queue.Queue()  # pids, in the order the workers were asked for
        self._ended: dict[int, int] = {}  # pid -> exit status
        self._forked: list[int] = []
        self._gone: int | None = None  # the fork server's own exit status, once it has ended
        self._changed = threading.Condition()
        self._reports = threading.Thread(target=self._read_reports, args=(read_end,), name="fork_server", daemon=True)
        self._reports.start()

    def hand_over(self, environment: dict[str, str]) -> int | None:
        """A new worker forked with `environment` (it joins the job): its pid, or None if the server has died."""
        assert self._process.stdin is not None
        with self._lock:
            if self._gone is not None:  # (its one None answered an earlier hand-over)
                return None
            with contextlib.suppress(BrokenPipeError):  # it died: its exit status is the worker's
                self._process.stdin.write(json.dumps(environment).encode() + b"\n")
                self._process.stdin.flush()
            return self._started.get()

    def wait(self, pid: int | None) -> int:
        """The exit status of worker `pid` once it has ended (as `subprocess.Popen.returncode`); that of the
        server for a worker it did not live to fork or report (pid None, or the server killed: its orphans are
        killed too)."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._ended or self._gone is not None)
            return self._ended[pid] if pid in self._ended else self._gone  # type: ignore[return-value]

    def close(self) -> None:
        """No more workers: the fork server ends once its workers have; stopped at once if none was forked."""
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        if not self._forked:
            self._process.kill()
        try:
            self._process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reports.join()

    def _read_reports(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb") as reports:
            for line in reports:
                what, pid, *status = line.split()
                if what == b"started":
                    self._forked.append(int(pid))
                    self._started.put(int(pid))
                else:
                    with self._changed:
                        self._ended[int(pid)] = int(status[0])
                        self._changed.notify_all()
        gone = self._process.wait()
        with self._changed:
            self._gone = gone
            self._changed.notify_all()
        self._started.put(None)
        for orphan in set(self._forked) - set(self._ended):  # workers of a killed fork server
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)


class Started(NamedTuple):
    """A fork server and the log it writes to."""

    server: ForkServer
    log: WorkerLog

    @classmethod
    def now(cls) -> Started:
        """A fork server started now, writing to a new log."""
        log = WorkerLog()
        return cls(ForkServer(log.write_end), log)


_STARTED: list[Started] = []  # started ahead, not yet taken by a job


@contextlib.contextmanager
def started_ahead() -> Iterator[None]:
    """A fork server and its log started now, for the next local job with several workers to take
    (`take_started`); both closed on leaving if no job took them."""
    started = Started.now()
    _STARTED.append(started)
    try:
        yield
    finally:
        if started in _STARTED:
            _STARTED.remove(started)
            started.server.close()
            started.log.close()


def take_started() -> Started:
    """The fork server started ahead (`started_ahead`) if any, else one started now: the caller's to close (its
    server, then its log)."""
    return _STARTED.pop() if _STARTED else Started.now()
