"""Job data kept as files in OUT's staging folder, so that Beam elements stay small.

Beam's local runner holds every element that crosses from one stage to the next in its own memory (several
times over, while it encodes and splits them for the workers). The per-file data (read tasks, record batches,
shard plans) therefore travels as files, through Beam's filesystems, and elements only name them: the runner's
memory stays flat however many files a dataset has.
"""
from __future__ import annotations

import pickle
import uuid
from collections.abc import Sequence
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
