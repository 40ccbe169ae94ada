"""Record indexes: where each record of a shard starts and how long it is, one line `offset size` per record (the
format of NVIDIA DALI's `tfrecord2idx`, which DALI's TFRecord reader needs).

The conversion writes each shard's index into the dataset's `dali-index/` folder (`index_filename`), where no shard
glob (`*.tfrecord*`, even recursive) finds it; for a dataset converted without them (elsewhere, or before indexes
existed), `index_for` builds one once from the shard's framing, in that folder or, when the dataset is read-only, in
the user's cache. Datasets converted earlier kept each index beside its shard as `dali-index.SHARD`
(`legacy_filename`), a name shard globs match: `index_for` moves it into the folder. Needs neither TensorFlow nor
Apache Beam.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence

from shardflow.core import files, framing
from shardflow.core.metadata import Shard

FOLDER = "dali-index"  # in the dataset's folder
SUFFIX = ".idx"
LEGACY_PREFIX = "dali-index."  # the old name, beside the shard: dali-index.NAME-SPLIT.tfrecord-00000-of-000NN


def index_filename(shard_filename: str) -> str:
    """A shard's index, relative to the dataset's folder: NAME-SPLIT.tfrecord-00000-of-000NN ->
    dali-index/NAME-SPLIT-00000-of-000NN.idx (no "tfrecord" in it, so that no shard glob finds it)."""
    return f"{FOLDER}/{shard_filename.replace('.tfrecord', '')}{SUFFIX}"


def index_path(shard_path: str) -> str:
    """The path of a local shard's index."""
    folder, name = os.path.split(shard_path)
    return os.path.join(folder, *index_filename(name).split("/"))


def legacy_filename(shard_filename: str) -> str:
    """Where datasets written before the `dali-index/` folder kept a shard's index: beside it, `dali-index.` + the
    shard's name (which `*.tfrecord*` matches)."""
    return LEGACY_PREFIX + shard_filename


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
    """The path of a local shard's index that fits it (its `metadata` record count and size): the one in
    `dali-index/`, else an old one beside the shard (`legacy_filename`), moved into `dali-index/` (used where it is
    when the dataset is read-only), else one in the user's cache (`cache_dir`, named by the shard's SHA-256). When
    none fits, one is built (`scan`) and written into `dali-index/` (replacing an old one), or into the cache when
    the dataset is read-only."""
    beside = index_path(shard_path)
    cached = os.path.join(cache_dir(), shard.sha256 + SUFFIX)
    legacy = os.path.join(os.path.dirname(shard_path), legacy_filename(os.path.basename(shard_path)))
    for path in (beside, legacy, cached):
        if os.path.exists(path) and _fits(path, shard):
            return path if path != legacy else _moved(legacy, beside)
    text = scan(shard_path)
    try:
        os.makedirs(os.path.dirname(beside), exist_ok=True)
        _write_atomically(beside, text)
    except OSError:
        os.makedirs(cache_dir(), exist_ok=True)
        _write_atomically(cached, text)
        return cached
    with contextlib.suppress(FileNotFoundError):
        os.remove(legacy)  # an old one that does not fit: replaced, as one in `dali-index/` is
    return beside


def _moved(legacy: str, beside: str) -> str:
    """An old index moved to where indexes go now, out of shard globs' way; left in place when that fails."""
    try:
        os.makedirs(os.path.dirname(beside), exist_ok=True)
        os.replace(legacy, beside)
    except OSError:
        return legacy if os.path.exists(legacy) else beside  # read-only, or another reader moved it first
    return beside


def mismatch(text: str, framed_lengths: Sequence[int]) -> str | None:
    """How an index (its text) differs from the one its shard's framed records (these lengths) give; None if not."""
    lines, expected = text.splitlines(), index_text(framed_lengths).splitlines()
    for number, (line, want) in enumerate(zip(lines, expected), 1):
        if line != want:
            return f"line {number} is {line!r}, the shard's framing gives {want!r}"
    if len(lines) != len(expected):
        return f"{len(lines)} lines for the shard's {len(expected)} records"
    return None


def entries(text: bytes | str) -> list[tuple[int, int]]:
    """An index's (offset, size) per record, in order; ValueError unless every line is two whole numbers."""
    lines = text.splitlines()
    fields = [line.split() for line in lines]
    if not all(len(pair) == 2 and pair[0].isdigit() and pair[1].isdigit() for pair in fields):
        raise ValueError("a record index line is not `offset size`")
    return [(int(offset), int(size)) for offset, size in fields]


def _fits(path: str, shard: Shard) -> bool:
    """Whether the index at `path` has one line `offset size` per record of `shard`, each record starting where the
    one before ends, the last ending where the shard does (what can be told without reading the shard)."""
    with open(path, "rb") as f:
        try:
            records = entries(f.read())
        except ValueError:
            return False
    end = 0
    for offset, size in records:
        if offset != end:
            return False
        end += size
    return len(records) == shard.num_records and end == shard.num_bytes


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
