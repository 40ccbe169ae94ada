"""Live progress of a conversion: workers drop small counter files, the launcher sums and shows them.

Beam's runners block until the job ends (the local job service answers for counters only then) and the workers
are other processes, maybe on other machines, so counters travel through files: in a local folder for local
workers, in OUT's staging folder (through Beam's filesystems) for a runner's own workers. On an object store a
worker writes its file every `REMOTE_FLUSH_SECONDS` (Cloud Storage takes about one write a second per object).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TextIO

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from tqdm import tqdm

from shardflow.core.files import is_remote

FLUSH_SECONDS = 0.5
REMOTE_FLUSH_SECONDS = 10.0
REMOTE_READERS = 32  # counter files read at once from an object store
SILENT_SECONDS = 60  # with no worker's report after this long, `ProgressDisplay` says its `silent_hint`
READING = "reading images"  # the stages the display names, in the job's order: inputs read (or rejected),
REMOVING = "removing duplicates"  # parts of the duplicate keys joined (--dedupe),
GROUPING = "grouping duplicates"  # the same to report the groups,
PLANNING = "planning shards"  # ranges of path hashes sorted and cut into shards,
WRITING = "writing shards"  # shards written


class Stage(NamedTuple):
    """A step of the job the display names: what it counts, and how many there are (None: not known ahead)."""

    name: str
    unit: str
    total: int | None = None


class ProgressWriter:
    """Counts what one worker did in one `stage` (inputs done and rejected, parts, shards...); writes the counts
    to `folder` (any of Beam's filesystems) at most every `flush_seconds(folder)`, and on `flush`. No folder: counts
    nothing anywhere."""

    def __init__(self, folder: str | None, stage: str = READING):
        self._path = FileSystems.join(folder, f"{uuid.uuid4().hex}.json") if folder else None
        self._every = flush_seconds(folder) if folder else 0.0
        self.stage = stage
        self.done = self.rejected = 0
        self._last = 0.0

    def add(self, *, rejected: bool = False) -> None:
        self.done += 1
        self.rejected += int(rejected)
        if time.monotonic() - self._last > self._every:
            self.flush()

    def flush(self) -> None:
        if self._path is None or not self.done:
            return
        self._last = time.monotonic()
        counts = json.dumps({"stage": self.stage, "done": self.done, "rejected": self.rejected}).encode()
        if is_remote(self._path):
            with FileSystems.create(self._path) as f:  # (an object appears whole, once written)
                f.write(counts)
            return
        temporary = f"{self._path}.tmp"
        with open(temporary, "wb") as f:
            f.write(counts)
        os.replace(temporary, self._path)


def flush_seconds(folder: str) -> float:
    """How often counts are written to, and read from, the progress folder `folder`."""
    return REMOTE_FLUSH_SECONDS if is_remote(folder) else FLUSH_SECONDS


class Counted(beam.DoFn):
    """`function` (element, *side inputs) -> its outputs, each element counted as one done in `stage`: a worker
    step the progress display names."""

    def __init__(self, function: Callable[..., Iterable[Any]], progress_dir: str | None, stage: str):
        self._function, self._progress_dir, self._stage = function, progress_dir, stage

    def setup(self):
        self._progress = ProgressWriter(self._progress_dir, self._stage)

    def process(self, element, *args, **kwargs):
        yield from self._function(element, *args, **kwargs)
        self._progress.add()

    def finish_bundle(self):
        self._progress.flush()


def read_counts(folder: str) -> dict[str, tuple[int, int]]:
    """Per stage, (done, rejected) summed over every worker's counter file. On an object store the files are read
    `REMOTE_READERS` at a time: a job of many workers leaves thousands (one per worker thread and stage), and one
    read takes tens of milliseconds."""
    paths = _counter_files(folder)
    if is_remote(folder) and len(paths) > 1:
        with ThreadPoolExecutor(min(len(paths), REMOTE_READERS)) as pool:
            found = list(pool.map(_read_counter, paths))
    else:
        found = [_read_counter(path) for path in paths]
    counts: dict[str, tuple[int, int]] = {}
    for worker in found:
        if worker is not None:
            done, rejected = counts.get(worker["stage"], (0, 0))
            counts[worker["stage"]] = done + worker["done"], rejected + worker["rejected"]
    return counts


def _read_counter(path: str) -> dict[str, Any] | None:
    try:
        with FileSystems.open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError, BeamIOError):
        return None  # being replaced right now


def _counter_files(folder: str) -> list[str]:
    if not is_remote(folder):
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return [os.path.join(folder, name) for name in names if name.endswith(".json")]
    try:
        return [found.path for found in FileSystems.match([FileSystems.join(folder, "*.json")])[0].metadata_list]
    except BeamIOError:
        return []  # (nothing written yet)


class ProgressDisplay:
    """The job's progress, fed from a progress folder by a background thread: each stage of `stages` by name with
    its own count, once its workers report (the local runner runs one stage at a time). On a terminal, a live
    bar per stage; into a file or pipe, no bars: one line per stage, as it ends ("reading images: 70000/70000").
    `rejected_before`: inputs the listing rejected, counted as read. `images_read`, if given, is set once the
    reading stage has ended (a later stage has begun). `silent_hint`, if given, is said when no worker has reported for
    `SILENT_SECONDS`."""

    def __init__(
        self,
        folder: str,
        stages: Sequence[Stage],
        rejected_before: int = 0,
        stream: TextIO = sys.stderr,
        images_read: threading.Event | None = None,
        silent_hint: str | None = None,
    ):
        self._folder, self._stages, self._stream = folder, {stage.name: stage for stage in stages}, stream
        self._images_read, self._silent_hint = images_read, silent_hint
        self._started = time.monotonic()
        self._rejected_before = rejected_before
        self._live = _isatty(stream)
        self._seen: list[str] = []  # stages in the order they began
        self._bar: tqdm | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProgressDisplay:
        if not is_remote(self._folder):  # (object stores have no folders)
            os.makedirs(self._folder, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._update(final=True)

    def _run(self) -> None:
        while not self._stop.wait(flush_seconds(self._folder)):
            self._update()

    def _update(self, final: bool = False) -> None:
        counts = read_counts(self._folder)
        if self._images_read is not None and any(name != READING for name in counts):
            self._images_read.set()
        if counts:
            self._silent_hint = None  # (said at most once, and never once a worker has reported)
        elif self._silent_hint and time.monotonic() - self._started >= SILENT_SECONDS:
            self._stream.write(f"no worker has reported after {SILENT_SECONDS} s: {self._silent_hint}\n")
            self._stream.flush()
            self._silent_hint = None
        done, rejected = counts.get(READING, (0, 0))
        counts[READING] = done + self._rejected_before, rejected + self._rejected_before  # (shown from the start)
        began = [name for name in self._stages if name in counts and name not in self._seen]
        for name in began:  # a stage begins once the one before it ended: that one's counts are final
            if self._seen:
                self._end(self._seen[-1], counts[self._seen[-1]])
            self._seen.append(name)
            if self._live:
                stage = self._stages[name]
                self._bar = tqdm(
                    total=stage.total,
                    desc=name,
                    unit=f" {stage.unit}",
                    file=self._stream,
                    dynamic_ncols=True,
                    mininterval=FLUSH_SECONDS,
                )
        if self._seen and self._bar is not None:
            self._show(self._bar, counts[self._seen[-1]])
            self._bar.refresh()
        if final and self._seen:
            self._end(self._seen[-1], counts[self._seen[-1]])

    def _show(self, bar: tqdm, count: tuple[int, int]) -> None:
        bar.n = count[0]
        if count[1] or self._seen[-1] == READING:
            bar.set_postfix(rejected=count[1], refresh=False)

    def _end(self, name: str, count: tuple[int, int]) -> None:
        """The stage `name` ended with `count`: its bar closes at that count, or its line is written."""
        if self._bar is not None:
            self._show(self._bar, count)
            if self._bar.total is not None and self._bar.n < self._bar.total:
                self._bar.total = self._bar.n  # (it ended: fewer than planned, e.g. parts that got no keys)
            self._bar.close()
            self._bar = None
            return
        if self._live:
            return
        done, rejected = count
        self._stream.write(
            f"{name}: "
            + (
                f"{done}/{self._stages[name].total}, {rejected} rejected"
                if name == READING
                else f"{done} {self._stages[name].unit}"
            )
            + "\n"
        )
        self._stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
