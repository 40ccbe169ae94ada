"""The log of Beam's local workers (`WorkerLog`): a pipe their stderr goes into, copied into the conversion's
beam.log. Needs no Beam: the CLI opens it, with the fork server that writes to it, before it imports Beam
(`fork_server.started_ahead`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import BinaryIO, TextIO

PUMP_JOIN_SECONDS = 2.0


class WorkerLog:
    """A pipe that Beam's local worker processes write their stderr into, and a thread that copies it into a log
    file: the fork server is given `write_end` as its stderr as soon as it starts, before the log's path is known
    (what comes before `to` is held until then); `to` also sends this process's file descriptor 2 through it.

    Beam's local workers log at INFO before they read any option; a user should see a progress bar instead.
    A pipe, not the file itself: a worker reports a failed bundle only after printing its traceback to stderr,
    and when that print fails (the log's disk is full, the very error being reported) the worker never answers
    and the runner waits forever. A pipe write cannot fail that way; the thread drops what the file refuses.
    Closed on leaving the `with` (`close`).
    """

    def __init__(self) -> None:
        read_end, self.write_end = os.pipe()
        self._path: str | None = None
        self._pump = threading.Thread(target=self._copy, args=(read_end,), name="worker_log", daemon=True)
        self._pump.start()

    def __enter__(self) -> WorkerLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """This process's end of the pipe closed: the thread ends once the workers are gone too."""
        os.close(self.write_end)
        self._pump.join(timeout=PUMP_JOIN_SECONDS)

    @contextlib.contextmanager
    def to(self, path: str) -> Iterator[TextIO]:
        """Into the log file `path` from now on, with what came before; this process's stderr too while inside
        (Beam's worker in this process with `--workers 1`); yields the real stderr."""
        self._path = path
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(self.write_end, 2)
        real_stderr = os.fdopen(os.dup(saved), "w")
        try:
            yield real_stderr
        finally:
            real_stderr.flush()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            real_stderr.close()

    def _copy(self, read_end: int) -> None:
        """Copy everything from the pipe to the log file until every writer is gone; never stop draining."""
        held: list[bytes] = []  # what came before the path, or since
        log: BinaryIO | None = None
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                held.append(chunk)
                if self._path is not None:
                    log = _write(log, self._path, held)
        if held and self._path is not None:
            log = _write(log, self._path, held)
        if log is not None:
            log.close()


def _write(log: BinaryIO | None, path: str, held: list[bytes]) -> BinaryIO | None:
    """`held` appended to `log` (`path`, opened on first use), then cleared; what the file refuses is dropped."""
    try:
        log = log or open(path, "ab", buffering=0)
        for chunk in held:
            log.write(chunk)
    except OSError:  # disk full: keep draining so no writer ever blocks
        pass
    held.clear()
    return log
