"""Live progress of a local conversion: workers drop small counter files, the launcher sums and shows them.

Beam's in-process runner blocks until the job ends and its workers are separate processes, so counters
travel through files in a local folder. Remote runners have their own UI; there, no progress folder is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TextIO

from tqdm import tqdm

FLUSH_SECONDS = 0.5
PUMP_JOIN_SECONDS = 2.0


class ProgressWriter:
    """Counts inputs done and rejected in one worker; writes them to `folder` at most every half second."""

    def __init__(self, folder: str | None):
        self._path = os.path.join(folder, f"{uuid.uuid4().hex}.json") if folder else None
        self.done = self.rejected = 0
        self._last = 0.0

    def add(self, *, rejected: bool) -> None:
        self.done += 1
        self.rejected += int(rejected)
        if time.monotonic() - self._last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._path is None:
            return
        self._last = time.monotonic()
        temporary = f"{self._path}.tmp"
        with open(temporary, "w") as f:
            json.dump({"done": self.done, "rejected": self.rejected}, f)
        os.replace(temporary, self._path)


def read_counts(folder: str) -> tuple[int, int]:
    """(inputs done, rejected) summed over every worker's counter file."""
    done = rejected = 0
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if name.endswith(".json"):
            try:
                with open(os.path.join(folder, name)) as f:
                    counts = json.load(f)
            except (OSError, ValueError):
                continue  # being replaced right now
            done += counts["done"]
            rejected += counts["rejected"]
    return done, rejected


class ProgressDisplay:
    """A live bar (files done, images/s, rejects) fed from a progress folder, in a background thread."""

    def __init__(self, folder: str, total: int, already_rejected: int = 0, stream: TextIO = sys.stderr):
        self._folder, self._rejected_before = folder, already_rejected
        self._bar = tqdm(
            total=total,
            desc="converting",
            unit="img",
            file=stream,
            dynamic_ncols=True,
            mininterval=FLUSH_SECONDS,
            initial=already_rejected,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProgressDisplay:
        os.makedirs(self._folder, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._update(refresh=False)
        self._bar.close()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self._update()

    def _update(self, refresh: bool = True) -> None:
        done, rejected = read_counts(self._folder)
        self._bar.n = done + self._rejected_before
        self._bar.set_postfix(rejected=rejected + self._rejected_before, refresh=False)
        if refresh:
            self._bar.refresh()


@contextlib.contextmanager
def worker_logs_to(path: str) -> Iterator[TextIO]:
    """Send file descriptor 2, which Beam's worker processes inherit, through a pipe that a thread copies into
    the log file at `path`; yield the real stderr.

    Beam's local workers log at INFO before they read any option; a user should see a progress bar instead.
    A pipe, not the file itself: a worker reports a failed bundle only after printing its traceback to stderr,
    and when that print fails (the log's disk is full, the very error being reported) the worker never answers
    and the runner waits forever. A pipe write cannot fail that way; the thread drops what the file refuses.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_copy_pipe, args=(read_end, path), daemon=True)
    pump.start()
    real_stderr = os.fdopen(os.dup(saved), "w")
    try:
        yield real_stderr
    finally:
        real_stderr.flush()
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the launcher's write end: the pump ends once the workers are gone
        os.close(saved)
        real_stderr.close()
        pump.join(timeout=PUMP_JOIN_SECONDS)


def _copy_pipe(read_end: int, path: str) -> None:
    """Copy everything from the pipe to the log file until every writer is gone; never stop draining."""
    try:
        log = open(path, "ab", buffering=0)
    except OSError:
        log = None
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            if log is None:
                continue
            try:
                log.write(chunk)
            except OSError:  # disk full: keep draining so no writer ever blocks
                log = None
