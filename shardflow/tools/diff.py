"""`shardflow diff OLD NEW`: what changed between two versions of a dataset, per split and class.

Records are matched by their source path (`image/filename`) and compared by a hash of the image they store: a
path only in NEW is added, only in OLD removed, in both with other pixels or another label changed. Splits come
from a stable hash of the path, so an unchanged file keeps its split between versions; `moved` counts the
files that did not (another --splits, or --split-counts).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from typing import NamedTuple

from shardflow.core import metadata
from shardflow.core.decoder import Decoder, Fields
from shardflow.core.messages import display_width, pad
from shardflow.core.shards import stored_records

BATCH = 256
EXAMPLES = 5  # paths listed per kind of change
KINDS = ("added", "removed", "changed", "unchanged")
KEY_TITLE = "split/class"
COUNT_WIDTH = 11  # columns of each kind's count


class Entry(NamedTuple):
    """One record as `diff` compares it."""

    split: str
    class_name: str
    digest: str  # SHA-256 of the stored image


@dataclasses.dataclass(frozen=True)
class DatasetDiff:
    old: str
    new: str
    counts: dict[str, Counter]  # "split/class" -> {"added": n, "removed": n, "changed": n, "unchanged": n}
    examples: dict[str, list[str]]  # kind of change -> the first paths
    moved: int  # paths in both versions whose split differs

    @property
    def identical(self) -> bool:
        return not any(c["added"] or c["removed"] or c["changed"] for c in self.counts.values()) and not self.moved

    def text(self) -> str:
        """For people: the totals, a table of counts per split and class (aligned by display width, so CJK class
        names keep their columns), then examples of each change."""
        totals = sum(self.counts.values(), Counter())
        width = max([display_width(KEY_TITLE), *map(display_width, self.counts)])
        lines = [
            f"{self.old} -> {self.new}: "
            + ", ".join(f"{totals[k]} {k}" for k in KINDS)
            + f"; {self.moved} file(s) moved to another split",
            f"  {pad(KEY_TITLE, width)}" + "".join(f"{k:>{COUNT_WIDTH}}" for k in KINDS),
        ]
        lines += [
            f"  {pad(key, width)}" + "".join(f"{counts[k]:>{COUNT_WIDTH}}" for k in KINDS)
            for key, counts in self.counts.items()
        ]
        lines += [
            f"  {kind}: {', '.join(paths)}" + (" ..." if totals[kind] > len(paths) else "")
            for kind, paths in self.examples.items()
            if paths
        ]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "old": self.old,
            "new": self.new,
            "moved": self.moved,
            "examples": self.examples,
            "counts": {key: dict(counts) for key, counts in self.counts.items()},
        }


def diff(old_dir: str, new_dir: str) -> DatasetDiff:
    """Compare two converted datasets record by record (see the module docstring)."""
    old, new = _entries(metadata.read(old_dir)), _entries(metadata.read(new_dir))
    counts: dict[str, Counter] = {}
    examples: dict[str, list[str]] = {kind: [] for kind in (*KINDS[:-1], "moved")}

    def count(entry: Entry, kind: str, path: str) -> None:
        counts.setdefault(f"{entry.split}/{entry.class_name}", Counter())[kind] += 1
        if kind != "unchanged" and len(examples[kind]) < EXAMPLES:
            examples[kind].append(path)

    moved = 0
    for path in sorted(old.keys() | new.keys()):
        before, after = old.get(path), new.get(path)
        if before is None:
            count(new[path], "added", path)
        elif after is None:
            count(before, "removed", path)
        else:
            same = before.digest == after.digest and before.class_name == after.class_name
            count(after, "unchanged" if same else "changed", path)
            if before.split != after.split:
                moved += 1
                if len(examples["moved"]) < EXAMPLES:
                    examples["moved"].append(f"{path} ({before.split} -> {after.split})")
    order = {split: rank for rank, split in enumerate(metadata.split_names({k.split("/")[0] for k in counts}))}
    ordered = sorted(counts.items(), key=lambda item: (order[item[0].split("/")[0]], item[0]))
    return DatasetDiff(old_dir, new_dir, dict(ordered), examples, moved)


def _entries(info: metadata.DatasetInfo) -> dict[str, Entry]:
    """Every record of a dataset by source path."""
    decoder = Decoder(info.schema)
    entries = {}
    for split in info.splits:
        for records in stored_records(info, split).batch(BATCH):
            fields = decoder.parse(records)
            for name, label, data in zip(fields.filename.numpy(), fields.label.numpy(), _image_bytes(fields)):
                entries[name.decode("utf-8", "surrogateescape")] = Entry(
                    split, metadata.label_name(info.class_names, label), hashlib.sha256(data).hexdigest()
                )
    return entries


def _image_bytes(fields: Fields) -> list[bytes]:
    """The stored image of each record (raw images: their shape too, so a reshaped image differs)."""
    data = fields.data.numpy()
    if fields.shape is None:
        return list(data)
    return [repr(shape.tolist()).encode() + blob for shape, blob in zip(fields.shape.numpy(), data)]


def same_shards(old: metadata.DatasetInfo, new: metadata.DatasetInfo) -> bool:
    """Whether two datasets hold byte-identical shards (by their recorded SHA-256s), split by split."""

    def checksums(info: metadata.DatasetInfo) -> dict[str, list[str]]:
        return {name: [shard.sha256 for shard in split.shards] for name, split in info.splits.items()}

    return checksums(old) == checksums(new)
