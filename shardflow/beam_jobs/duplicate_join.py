"""Groups of duplicates found as a distributed join: no process holds every record's keys.

  PlanParts   which part each band value goes to: the records per (band, value) counted in each record batch
              and summed (a table of `BANDS` x 2^10 counts, whatever the dataset's size), then the values dealt
              out largest first to the part with the fewest keys. Band values are few (3,584) and far from
              evenly common (at 600,000 synthetic images the largest held 13,000 records): parts chosen by a hash
              of the value came out up to 1.8x the mean; dealt out, all 80 within 1 key of it.
  KeyParts    each record batch's duplicate keys, cut by key into `num_parts` part files in the staging folder:
              the exact key once (its part by a hash of the key), and the perceptual hash once per band
              (`duplicates.BANDS`, its part as planned), with the thumbnails that confirm a pair. Two near
              duplicates share one band's value at least (pigeonhole), so they meet in that value's part; exact
              twins meet in their key's part.
  FindPairs   per part (a GroupByKey on the part number; only file names travel through the runner): the pairs
              that connect its duplicates (`duplicates.equal_pairs`, `duplicates.near_key_pairs`), confirmed with
              the thumbnails where the keys are. Only duplicates leave a part.
  GroupPairs  every part's pairs (few: only duplicates) joined into groups (`duplicates.components`), members
              and groups in path order: the same groups as `duplicates.find_groups` over all records at once.
              `FindDuplicates` does it as a stage of its own, for `Dedupe`; the conversion's summary does it
              for the groups it reports (`FindPairs` gives it the pairs).

`Dedupe` joins what it drops back to the record batches by their file (`CoGroupByKey`), not by broadcast.
Each record puts 1 + `duplicates.BANDS` keys of about 350 bytes into the parts; `parts_for` keeps a part near
`KEYS_PER_PART` keys, so a worker's memory does not grow with the dataset, as long as no band value alone holds
more than a part's keys (at the synthetic images' density, about 2.5 million images; photos' hashes spread
wider).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from shardflow.beam_jobs import staged
from shardflow.beam_jobs.progress import GROUPING, REMOVING, Counted
from shardflow.core import duplicates, metadata

NAMESPACE = "shardflow"
KEYS_PER_PART = 60_000  # about 7,500 images: what a part of a 60,000-image dataset holds (MIN_PARTS)
MIN_PARTS = 8  # so that a small dataset's pairs are found by several workers at once, not one

Member = tuple[bytes, "str | None", int, str]  # path, split, label, record batch file
Groups = dict[str, list[list[Member]]]  # kind -> groups of members, by path


def parts_for(num_inputs: int) -> int:
    """How many parts the keys of `num_inputs` images are cut into."""
    return max(MIN_PARTS, math.ceil(num_inputs * (1 + duplicates.BANDS) / KEYS_PER_PART))


class KeyPart(NamedTuple):
    """The keys one record batch puts into one part: `exact` and `near` rows index `paths` and `labels`."""

    split: str | None
    batch_file: str
    paths: tuple[bytes, ...]
    labels: np.ndarray
    exact: np.ndarray  # ("record", "key")
    near: np.ndarray  # ("record", "band", "perceptual", "colour", "structure")


def _mix(values: np.ndarray, salt: np.ndarray | int) -> np.ndarray:
    """Well-spread 64-bit values (splitmix64's finalizer) of `values` and `salt`: which part a key goes to."""
    with np.errstate(over="ignore"):
        z = np.asarray(values, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15) * (np.asarray(salt, np.uint64) + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def band_counts(split_path: tuple[str | None, str]) -> np.ndarray:
    """(split, record batch file) -> how many of its records hold each band value: (`BANDS`, `BAND_VALUES`)."""
    hashes = staged.load(split_path[1]).rows["perceptual"]
    return np.stack(
        [
            np.bincount(duplicates.band_values(hashes, band).astype(np.intp), minlength=duplicates.BAND_VALUES)
            for band in range(duplicates.BANDS)
        ]
    )


def sum_counts(counts: Iterable[np.ndarray]) -> np.ndarray:
    """Band value counts added up (zeros for none)."""
    total = np.zeros((duplicates.BANDS, duplicates.BAND_VALUES), dtype=np.int64)
    for partial in counts:
        total += partial
    return total


def plan_parts(counts: np.ndarray, num_parts: int) -> np.ndarray:
    """The part of each (band, value), (`BANDS`, `BAND_VALUES`): the values dealt out most common first, each to
    the part with the fewest records so far (ties: the lowest part), so no part holds much more than its share.

    >>> plan_parts(np.array([[5, 1, 3, 2]]), 2).tolist()
    [[0, 0, 1, 1]]
    """
    order = np.lexsort((np.arange(counts.size), -counts.ravel()))  # most common first; ties by (band, value)
    loads = [(0, part) for part in range(num_parts)]  # a heap of (records, part)
    planned = np.zeros(counts.size, dtype=np.int32)
    for flat, count in zip(order.tolist(), counts.ravel()[order].tolist()):
        if count == 0:
            break
        load, part = heapq.heappop(loads)
        planned[flat] = part
        heapq.heappush(loads, (load + count, part))
    return planned.reshape(counts.shape)


def key_parts(
    split_path: tuple[str | None, str], num_parts: int, part_dir: str, value_parts: np.ndarray
) -> Iterable[tuple[int, str]]:
    """(split, record batch file) -> (part, part file) for each part its records' keys fall into; `value_parts`
    is `plan_parts`' plan."""
    split, batch_file = split_path
    batch = staged.load(batch_file)
    rows, count = batch.rows, len(batch)
    exact_part = _mix(np.ascontiguousarray(rows["exact"]).view("<u8").reshape(count, 2)[:, 0], 0) % np.uint64(num_parts)
    hashes = rows["perceptual"]
    near_parts = np.stack(
        [value_parts[band][duplicates.band_values(hashes, band).astype(np.intp)] for band in range(duplicates.BANDS)],
        axis=1,
    )  # (count, BANDS)
    near_dtype = np.dtype(
        [
            ("record", "<i4"),
            ("band", "u1"),
            ("perceptual", "<u8"),
            ("colour", rows.dtype["colour"]),
            ("structure", rows.dtype["structure"]),
        ]
    )
    for part in np.union1d(exact_part, near_parts).tolist():
        exact_records = np.flatnonzero(exact_part == part)
        near_records, near_bands = np.nonzero(near_parts == part)
        used = np.union1d(exact_records, near_records)  # sorted: renumber records within the part
        exact = np.empty(len(exact_records), dtype=[("record", "<i4"), ("key", rows.dtype["exact"])])
        exact["record"], exact["key"] = np.searchsorted(used, exact_records), rows["exact"][exact_records]
        near = np.empty(len(near_records), dtype=near_dtype)
        near["record"], near["band"] = np.searchsorted(used, near_records), near_bands
        for column in ("perceptual", "colour", "structure"):
            near[column] = rows[column][near_records]
        part_file = staged.save(
            KeyPart(split, batch_file, tuple(batch.paths[i] for i in used.tolist()), rows["label"][used], exact, near),
            part_dir,
        )
        yield part, part_file


def find_pairs(part_files: tuple[int, Iterable[str]]) -> list[tuple[str, Member, Member]]:
    """(part, its part files) -> the pairs (kind, member, member) that connect the duplicates among its keys:
    "exact" for equal exact keys, "near" for the rest."""
    _, files = part_files
    members: list[Member] = []
    exact_keys: list[bytes] = []
    exact_members: list[int] = []
    near_rows = []
    for path in files:
        part: KeyPart = staged.load(path)
        offset = len(members)
        members += [(p, part.split, label, part.batch_file) for p, label in zip(part.paths, part.labels.tolist())]
        exact_keys += [bytes(k) for k in part.exact["key"]]
        exact_members += (part.exact["record"] + offset).tolist()
        part.near["record"] += offset  # (its own array: the part was just loaded)
        near_rows.append(part.near)
    pairs = {("exact", exact_members[a], exact_members[b]) for a, b in duplicates.equal_pairs(exact_keys)}
    bands = np.unique(np.concatenate([near["band"] for near in near_rows])).tolist()
    for band in bands:  # one band's rows at a time: a part's keys are held once, not twice
        keyed = np.concatenate([near[near["band"] == band] for near in near_rows])
        records = keyed["record"].tolist()
        pairs |= {
            ("near", records[a], records[b])
            for a, b in duplicates.near_key_pairs(
                keyed["perceptual"],
                duplicates.byte_rows(keyed["colour"]),
                duplicates.byte_rows(keyed["structure"]),
                bands=[band],
            )
        }
    return [(kind, members[a], members[b]) for kind, a, b in sorted(pairs)]


def _pairs_of_part(part_files: tuple[int, Iterable[str]]) -> Iterable[list[tuple[str, Member, Member]]]:
    yield find_pairs(part_files)


def group_pairs(pairs: Iterable[tuple[str, Member, Member]]) -> Groups:
    """Every part's pairs -> per kind ("exact", "near": exact ones included), the groups of duplicates, members
    and groups in path order."""
    pairs = list(pairs)
    members = sorted({member for _, a, b in pairs for member in (a, b)})
    index = {member: i for i, member in enumerate(members)}
    found = {}
    for kind in duplicates.KINDS:
        joined = [(index[a], index[b]) for pair_kind, a, b in pairs if kind == "near" or pair_kind == kind]
        found[kind] = [[members[i] for i in group] for group in duplicates.components(len(members), joined)]
    return found


def drops_by_batch(groups: Groups, kind: str) -> Iterable[tuple[str, tuple[bytes, bytes]]]:
    """Each duplicate of `kind` but its group's first (smallest path), keyed by its record batch file:
    (batch file, (path, the kept path))."""
    for group in groups[kind]:
        for path, _, _, batch_file in group[1:]:
            yield batch_file, (path, group[0][0])


def drop_duplicates(joined: tuple[str, dict[str, list[Any]]], batch_dir: str) -> Iterable[Any]:
    """(record batch file, its split and what to drop of it) -> (split, the batch without those records) unless
    none is left; tagged "rejects", each dropped one as (path, "duplicate of PATH")."""
    batch_file, parts = joined
    (split,), to_drop = parts["batch"], dict(parts["drop"])
    if not to_drop:
        yield split, batch_file
        return
    batch = staged.load(batch_file)
    dropped = np.array([p in to_drop for p in batch.paths], dtype=bool)
    for i in np.flatnonzero(dropped).tolist():
        Metrics.counter(NAMESPACE, f"rejected: {metadata.DUPLICATE}").inc()
        kept = to_drop[batch.paths[i]].decode("utf-8", "surrogateescape")
        yield beam.pvalue.TaggedOutput("rejects", (batch.paths[i], f"{metadata.DUPLICATE_OF}{kept}"))
    if not dropped.all():
        yield split, staged.save(batch.take(np.flatnonzero(~dropped)), batch_dir)


class FindPairs(beam.PTransform):
    """(split, record batch file) -> per part, the list of pairs that connect its duplicates (`find_pairs`); the
    groups they make are `group_pairs` of them all. Parts done are counted as `stage` in `progress_dir`."""

    def __init__(self, num_parts: int, part_dir: str, progress_dir: str | None = None, stage: str = GROUPING):
        super().__init__()
        self._num_parts, self._part_dir = num_parts, part_dir
        self._progress_dir, self._stage = progress_dir, stage

    def expand(self, batches):
        value_parts = (
            batches
            | "CountBandValues" >> beam.Map(band_counts)
            | "SumCounts" >> beam.CombineGlobally(sum_counts).without_defaults()  # (no records: no parts to plan)
            | "PlanParts" >> beam.Map(plan_parts, self._num_parts)
        )
        return (
            batches
            | "KeyParts"
            >> beam.FlatMap(key_parts, self._num_parts, self._part_dir, beam.pvalue.AsSingleton(value_parts))
            | "GroupByPart" >> beam.GroupByKey()
            | "FindPairs" >> beam.ParDo(Counted(_pairs_of_part, self._progress_dir, self._stage))
        )


class FindDuplicates(beam.PTransform):
    """(split, record batch file) -> one element: per kind, the groups of duplicates (`group_pairs`), each member
    (path, split, label, record batch file). Parts done are counted as `stage` in `progress_dir`."""

    def __init__(self, num_parts: int, part_dir: str, progress_dir: str | None = None, stage: str = GROUPING):
        super().__init__()
        self._find_pairs = FindPairs(num_parts, part_dir, progress_dir, stage)

    def expand(self, batches):
        return (
            batches
            | "FindPairs" >> self._find_pairs
            | "GatherPairs" >> beam.CombineGlobally(_concatenate).without_defaults()  # (no records: no pairs)
            | "GroupPairs" >> beam.Map(group_pairs)
        )


class Dedupe(beam.PTransform):
    """(split, record batch file) -> the same, one image kept per group of `kind` duplicates (its smallest path);
    tagged "rejects", the others as (path, "duplicate of PATH")."""

    def __init__(self, kind: str, num_parts: int, staging: str, progress_dir: str | None = None):
        super().__init__()
        duplicates.check_kind(kind, "dedupe")
        self._kind, self._num_parts, self._staging, self._progress_dir = kind, num_parts, staging, progress_dir

    def expand(self, batches):
        drops = (
            batches
            | "FindDuplicates"
            >> FindDuplicates(self._num_parts, FileSystems.join(self._staging, "parts"), self._progress_dir, REMOVING)
            | "ChooseKept" >> beam.FlatMap(drops_by_batch, self._kind)
        )
        by_file = batches | "ByFile" >> beam.Map(lambda split_path: (split_path[1], split_path[0]))
        return (
            {"batch": by_file, "drop": drops}
            | "JoinDrops" >> beam.CoGroupByKey()
            | "Drop"
            >> beam.FlatMap(drop_duplicates, FileSystems.join(self._staging, "batches")).with_outputs(
                "rejects", main="kept"
            )
        )


def _concatenate(lists: Iterable[list]) -> list:
    return [item for items in lists for item in items]


def summary_groups(groups: Groups) -> dict[str, list[list[tuple[str, str | None, int]]]]:
    """The groups as the job's summary lists them: (path, split, label) of each member."""
    return {
        kind: [
            [(path.decode("utf-8", "surrogateescape"), split, label) for path, split, label, _ in group]
            for group in kind_groups
        ]
        for kind, kind_groups in groups.items()
    }
