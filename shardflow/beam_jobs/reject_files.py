"""The rejects, however many: each worker writes the ones it saw as a file sorted by path (one per bundle, in the
staging folder), and the launcher merges those files in path order into rejects.jsonl, a line at a time. No
process ever holds the whole list, and the file's order does not depend on which worker read what.
"""

from __future__ import annotations

import heapq
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from shardflow.core import metadata


class WriteRejects(beam.DoFn):
    """(path as surrogate-escaped UTF-8 bytes, reason) -> per bundle, one file of them sorted by path (JSON
    lines, as rejects.jsonl has them) in `folder`; yields its path."""

    def __init__(self, folder: str):
        self._folder = folder

    def start_bundle(self):
        self._rejects: list[tuple[str, str]] = []

    def process(self, reject: tuple[bytes, str]) -> Iterable[str]:
        self._rejects.append((reject[0].decode("utf-8", "surrogateescape"), reject[1]))
        return ()

    def finish_bundle(self):
        if self._rejects:
            path = FileSystems.join(self._folder, f"{uuid.uuid4().hex}.jsonl")
            with FileSystems.create(path) as f:
                f.write("".join(_line(p, r) for p, r in sorted(self._rejects)).encode())
            yield GlobalWindows.windowed_value(path)


def _line(path: str, reason: str) -> str:
    return metadata.json_text({"path": path, "reason": reason}) + "\n"


def _read(path: str) -> Iterator[tuple[str, str]]:
    with FileSystems.open(path) as f:
        for line in f:
            entry = json.loads(line)
            yield entry["path"], entry["reason"]


class RejectsSummary:
    """What the metadata and the card say of the rejects: how many, how many of each kind, the first few."""

    def __init__(self) -> None:
        self.count = 0
        self.kinds: Counter[str] = Counter()
        self.first: list[tuple[str, str]] = []

    def add(self, path: str, reason: str) -> None:
        self.count += 1
        self.kinds[metadata.reject_kind(reason)] += 1
        if len(self.first) < 10:
            self.first.append((path, reason))


def merge(files: Sequence[str], known: Sequence[tuple[str, str]], path: str) -> RejectsSummary:
    """Write the rejects of `files` and the `known` ones (from the listing) to `path` in (path, reason) order;
    returns their summary."""
    summary = RejectsSummary()
    with FileSystems.create(path) as out:
        for reject in heapq.merge(sorted(known), *(_read(f) for f in files)):
            summary.add(*reject)
            out.write(_line(*reject).encode())
    return summary
