"""Record indexes: where each record of a shard starts and how long it is, one line `offset size` per record (the
format of NVIDIA DALI's `tfrecord2idx`, which DALI's TFRecord reader needs).

The conversion writes each shard's index beside it (`index_filename`); for a dataset converted without them
(elsewhere, or before indexes existed), `index_for` builds one once from the shard's framing, beside the shard or,
when that folder is read-only, in the user's cache. Needs neither TensorFlow nor Apache Beam.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from shardflow import files, framing
from shardflow.metadata import Shard

PREFIX = "dali-index."  # not a suffix: a file named like a shard plus more made TF's ram:// filesystem lose shards


def index_filename(shard_filename: str) -> str:
    """The name of a shard's index, which lies in the shard's folder: `dali-index.` + the shard's name."""
    return PREFIX + shard_filename


def index_path(shard_path: str) -> str:
    """The path of the index beside a local shard."""
    folder, name = os.path.split(shard_path)
    return os.path.join(folder, index_filename(name))


def index_text(framed_lengths: Iterable[int]) -> str:
    """The index of a shard whose framed records (header, data, CRC) have these lengths, in order."""
    lines, offset = [], 0
    for length in framed_lengths:
        lines.append(f"{offset} {length}\n")
        offset += length
    return "".join(lines)


def scan(shard_path: str) -> str:
    """The index of an existing shard, from its record headers (the data is skipped, not read)."""
    with files.open_binary(shard_path) as f:
        try:
            return index_text(framing.framed_sizes(f))
        except ValueError as error:
            raise ValueError(f"{shard_path}: {error}") from None


def index_for(shard_path: str, shard: Shard) -> str:
    """The path of a local shard's index: the one beside it or in the cache if it fits the shard (its `metadata`
    record count and size); else built once (`scan`) and written beside the shard when its folder is writable,
    otherwise into the user's cache (`cache_dir`), named by the shard's SHA-256."""
    beside = index_path(shard_path)
    cached = os.path.join(cache_dir(), shard.sha256 + ".idx")
    for path in (beside, cached):
        if os.path.exists(path) and _fits(path, shard):
            return path
    text = scan(shard_path)
    try:
        _write_atomically(beside, text)
        return beside
    except OSError:
        os.makedirs(cache_dir(), exist_ok=True)
        _write_atomically(cached, text)
        return cached


def _fits(path: str, shard: Shard) -> bool:
    """Whether the index at `path` has one line per record of `shard` and ends where the shard does."""
    with open(path) as f:
        lines = f.read().splitlines()
    if len(lines) != shard.num_records:
        return False
    offset, size = map(int, lines[-1].split()) if lines else (0, 0)
    return offset + size == shard.num_bytes


def cache_dir() -> str:
    """Where indexes of read-only datasets go: $XDG_CACHE_HOME/shardflow/record-index (~/.cache by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "shardflow", "record-index")


def _write_atomically(path: str, text: str) -> None:
    """Readers (other input pipelines building the same index) never see a partial file."""
    partial = f"{path}.{os.getpid()}.partial"
    try:
        with open(partial, "w") as f:
            f.write(text)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
