"""Job data kept as files in OUT's staging folder, so that Beam elements stay small.

Beam's local runner holds every element that crosses from one stage to the next in its own memory (several
times over, while it encodes and splits them for the workers). The per-file data (read tasks, record batches,
shard plans) therefore travels as files, through Beam's filesystems, and elements only name them: the runner's
memory stays flat however many files a dataset has.

Read tasks reach the workers as `StagedTask`s, one element each (any runner: the runner decides who reads
what), or, on the local runner, as one `TaskQueue` per worker: the local runner hands each worker half the
elements up front, and a worker slowed by anything (the machine's other jobs, its later start) would leave the
other idle at the end; a queue hands tasks out as workers free up.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from apache_beam.io.filesystems import FileSystems

from shardflow.beam_jobs.sources import ReadTask


class StagedTask(NamedTuple):
    """Where one pickled `ReadTask` sits in the staged task file."""

    path: str
    offset: int
    length: int

    def load(self) -> ReadTask:
        with FileSystems.open(self.path) as f:
            f.seek(self.offset)
            return pickle.loads(f.read(self.length))

    def read_tasks(self) -> Iterator[ReadTask]:
        yield self.load()


class TaskQueue(NamedTuple):
    """Every task of the staged task file, shared by the local workers: `read_tasks` yields the next task that no
    worker has claimed yet (`claim_next`, on the local file `claims` all workers see), so a worker that finishes
    early takes more."""

    path: str
    offsets: tuple[int, ...]  # task i is bytes [offsets[i], offsets[i + 1]) of `path`
    claims: str
    worker: int

    def read_tasks(self) -> Iterator[ReadTask]:
        with FileSystems.open(self.path) as f, open(self.claims, "r+b") as claims:
            while (index := claim_next(claims.fileno())) < len(self.offsets) - 1:
                f.seek(self.offsets[index])
                yield pickle.loads(f.read(self.offsets[index + 1] - self.offsets[index]))


_CLAIMING = threading.Lock()


def claim_next(claims: int) -> int:
    """The index of the next task, claimed by this call (no other gets it): the count in the open file `claims`,
    read and advanced under a POSIX record lock (between processes) and `_CLAIMING` (between this process's
    threads, which one process's record lock does not keep apart). Creating a file per claim took 0.27 ms a task
    while the workers' spill files were being written (750 tasks: 0.2 s per worker); this makes no directory entry
    (0.01 ms)."""
    with _CLAIMING:
        fcntl.lockf(claims, fcntl.LOCK_EX)
        try:
            index = int.from_bytes(os.pread(claims, 8, 0), "little")  # (none yet: 0)
            os.pwrite(claims, (index + 1).to_bytes(8, "little"), 0)
        finally:
            fcntl.lockf(claims, fcntl.LOCK_UN)
    return index


def stage_tasks(tasks: Sequence[ReadTask], path: str) -> list[StagedTask]:
    """Write `tasks` one after another into the file `path`; return where each one is."""
    staged, offset = [], 0
    with FileSystems.create(path) as f:
        for task in tasks:
            data = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
            f.write(data)
            staged.append(StagedTask(path, offset, len(data)))
            offset += len(data)
    return staged


def task_queues(staged: Sequence[StagedTask], path: str, workers: int, claims: str) -> list[TaskQueue]:
    """One `TaskQueue` per local worker over the tasks `stage_tasks` wrote to `path`; claims are counted in the
    local file `claims` (created here, empty)."""
    os.makedirs(os.path.dirname(os.path.abspath(claims)), exist_ok=True)
    with open(claims, "wb"):
        pass
    offsets = (*(task.offset for task in staged), sum(task.length for task in staged))
    return [TaskQueue(path, offsets, claims, worker) for worker in range(workers)]


def save(value: Any, folder: str) -> str:
    """Pickle `value` into a new file in `folder`; return its path."""
    path = FileSystems.join(folder, f"{uuid.uuid4().hex}.pickle")
    with FileSystems.create(path) as f:
        f.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def load(path: str) -> Any:
    """What `save` wrote to `path`."""
    with FileSystems.open(path) as f:
        return pickle.loads(f.read())
