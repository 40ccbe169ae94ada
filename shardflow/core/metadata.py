"""A converted dataset's metadata: TFDS's `dataset_info.json` + `features.json`, and shardflow's `shardflow.json`.

`DatasetInfo` is `shardflow.json` as a typed object, with its invariants: `read` is its one reader (local files,
or remote ones through `tf.io.gfile`: no Beam needed), `DatasetInfo.to_json` what the conversion writes.
`dataset_info.json` is written last: a folder without it (an interrupted run) is never taken as a dataset, by
TFDS or by `read`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from shardflow.core import files, schema
from shardflow.core.images import ImageOptions

DATASET_INFO = "dataset_info.json"
FEATURES = "features.json"
SHARDFLOW_INFO = "shardflow.json"
REJECTS = "rejects.jsonl"
DAMAGED_JPEGS = "damaged_jpegs.jsonl"  # records kept by --keep-damaged-jpegs: path, split, shard, record, warning
DUPLICATES = "duplicates.jsonl"
LABELS_WITHOUT_IMAGES = "labels_without_images.jsonl"  # rows of `convert --labels FILE.csv` naming no file: line, id
STAGING = ".shardflow-staging"
FORMAT_VERSION = 1
TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)  # the usual splits, in reading order
SIZE_BINS = (64, 128, 256, 512, 1024, 2048)  # histogram of the longer side: <64, 64-127, ..., >=2048
DUPLICATE = "duplicate"
DUPLICATE_OF = f"{DUPLICATE} of "  # the reason rejects.jsonl gives what --dedupe removed: "duplicate of PATH"
UNLABELED_CLASS = "unlabeled"  # the class name of records without a label (label -1)
NO_LABELS = "(no labels)"  # what a multi-label record with no class is called
LABEL_SET_SEPARATOR = "|"  # between the class names of a multi-label record (`label_name`)
NAMED_GROUPS = 10  # groups of duplicates that inspect and the card name (all of them are in duplicates.jsonl)
_SURROGATE = re.compile("[\ud800-\udfff]")  # a byte surrogateescape kept of a name that is not valid UTF-8


class DatasetError(ValueError):
    """A folder that is not a (complete) shardflow dataset, or a split it does not have."""


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard file of a split: a bare file name in the dataset's folder, its records, bytes and SHA-256."""

    filename: str
    num_records: int
    num_bytes: int
    sha256: str

    def __post_init__(self) -> None:
        """DatasetError for a name that is not a bare file name: a dataset from someone else must not make a
        reader open a file outside its folder (`../..`, an absolute path, another filesystem)."""
        name = self.filename
        if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\:\0"):
            raise DatasetError(f"shard file name {name!r} is not a file name of the dataset's own folder")


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: its shards and statistics (per-channel mean/std over all pixels, sizes)."""

    name: str
    shards: tuple[Shard, ...]
    label_counts: dict[str, int]  # class name (or UNLABELED_CLASS) -> records
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size_histogram: tuple[int, ...]  # longer side, binned by SIZE_BINS
    width_range: tuple[int, int]
    height_range: tuple[int, int]
    passthrough: int  # records whose bytes are the source file's
    # multi-label: [i][j] records with classes i and j ([i][i]: with class i, as label_counts); else empty
    cooccurrence: tuple[tuple[int, ...], ...] = ()

    @property
    def num_examples(self) -> int:
        return sum(s.num_records for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.num_bytes for s in self.shards)


@dataclasses.dataclass(frozen=True)
class DatasetCard:
    """What a team receiving the dataset reads first (TFDS's DatasetInfo fields, and OUT/README.md)."""

    version: str = "1.0.0"  # TFDS's MAJOR.MINOR.PATCH: OUT can be ROOT/NAME/VERSION for tfds.load("NAME:VERSION")
    description: str = ""
    homepage: str = ""
    license: str = ""
    citation: str = ""


@dataclasses.dataclass(frozen=True)
class Provenance:
    """How the dataset was made."""

    shardflow_version: str
    source: str  # SRC as given
    created: str  # ISO 8601, UTC
    runner: str
    options: dict[str, Any]  # every option that shaped the records
    source_fingerprint: str = ""  # SHA-256 based: the inputs' paths, sizes and contents (same source, same value)


@dataclasses.dataclass(frozen=True)
class LabelsFile:
    """Where a dataset's labels came from: `shardflow convert --labels FILE.csv`."""

    path: str  # FILE.csv as given
    id_column: str
    label_columns: tuple[str, ...]  # the one column of class names (or tags), or one 0/1 column per class
    separator: str | None  # between the tags of the one label column; None: each value is one class
    rows: int
    without_images: int  # rows naming no file of the source, listed in LABELS_WITHOUT_IMAGES
    ids_with_extension: bool  # its ids name files with their extension (cactus.jpg, not cactus)
    sha256: str  # of the file's bytes


@dataclasses.dataclass(frozen=True)
class DuplicateCounts:
    """Duplicates of one kind among a dataset's records."""

    groups: int  # groups of 2+ records that are duplicates of each other
    images: int  # records in those groups
    leaks: int  # groups with records in more than one split
    labels_differ: int | None = None  # groups whose records' labels differ (None: an older shardflow)


@dataclasses.dataclass(frozen=True)
class Duplicates:
    """The duplicates among a dataset's records (`shardflow.core.duplicates`): exact (the same decoded pixels) and near
    (perceptual hashes at most `threshold` bits apart, colour thumbnails within `colour_tolerance` and structure
    thumbnails within `structure_tolerance`; exact ones included), and what --dedupe removed first."""

    threshold: int
    exact: DuplicateCounts
    near: DuplicateCounts
    leak_example: dict[str, str]  # path -> split: two records of the first leaking group, in different splits
    dedupe: str | None = None  # --dedupe: the kind of duplicates of which one image per group was kept
    removed: int = 0  # records --dedupe rejected as "duplicate of PATH"
    colour_tolerance: int | None = None  # None: an older shardflow, whose near duplicates did not compare colours
    structure_tolerance: int | None = None  # None: an older shardflow, which did not compare structure

    @property
    def listed(self) -> bool:
        """Whether duplicates.jsonl lists the groups (written by the shardflow that counts `labels_differ`)."""
        return self.near.labels_differ is not None

    def sentence(self) -> str:
        """What inspect, the end of a conversion and the dataset card say about them."""
        near, exact = self.near, self.exact
        colours = "" if self.colour_tolerance is None else f" and colours within {self.colour_tolerance} levels"
        if self.structure_tolerance is not None:
            colours += f", structure within {self.structure_tolerance} levels RMS"
        found = (
            f"{near.groups} group(s) of near duplicates ({near.images} images, perceptual hashes within "
            f"{self.threshold} of 64 bits{colours}; exact copies among them: {exact.groups} group(s), {exact.images} "
            f"images), {near.leaks} across splits (leaks)"
        )
        if self.listed:
            found += f", {near.labels_differ} whose labels differ (each group listed in {DUPLICATES})"
        if not self.dedupe:
            return found
        return f"--dedupe {self.dedupe} removed {self.removed} (listed in {REJECTS}); the records left hold {found}"

    def problems(self, num_records: int, num_rejected: int) -> list[str]:
        """Broken invariants: counts that cannot be, or groups of the kind --dedupe removed still there."""
        found = [
            f"{kind} duplicates: {counts.images} images cannot make {counts.groups} groups ({counts.leaks} "
            f"leaking) among {num_records} records"
            for kind, counts in (("exact", self.exact), ("near", self.near))
            if not (
                2 * counts.groups <= counts.images <= num_records
                and counts.leaks <= counts.groups
                and (counts.labels_differ or 0) <= counts.groups
            )
        ]
        if self.exact.images > self.near.images:
            found.append(f"more exact duplicates ({self.exact.images}) than near ones ({self.near.images})")
        if self.removed > num_rejected:
            found.append(f"{self.removed} duplicates removed but only {num_rejected} rejects")
        if self.dedupe and getattr(self, self.dedupe).groups:
            found.append(f"--dedupe {self.dedupe} left {getattr(self, self.dedupe).groups} group(s)")
        return found


@dataclasses.dataclass(frozen=True)
class DuplicateMember:
    """One record of a group of duplicates."""

    path: str  # its source path (`image/filename`)
    split: str
    label: str  # its class name (UNLABELED_CLASS for unlabeled records)


@dataclasses.dataclass(frozen=True)
class DuplicateGroup:
    """One line of duplicates.jsonl: a group of near duplicates among a dataset's records (each group of exact
    copies lies within one). `kind` is "exact" when all its members decode to the same pixels, else "near" (it may
    hold exact copies besides others); `members` are in path order, so the first is the one --dedupe keeps."""

    kind: str
    members: tuple[DuplicateMember, ...]

    @property
    def leak(self) -> bool:
        """Members in more than one split: a test image whose twin is in train is not unseen."""
        return len({member.split for member in self.members}) > 1

    @property
    def labels_differ(self) -> bool:
        """Members of more than one class: a labelling question."""
        return len({member.label for member in self.members}) > 1

    def to_json(self) -> str:
        return json_text(
            {
                "kind": self.kind,
                "leak": self.leak,
                "labels_differ": self.labels_differ,
                "members": [dataclasses.asdict(member) for member in self.members],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> DuplicateGroup:
        """The inverse of `to_json` (`leak` and `labels_differ` follow from the members)."""
        value = json.loads(text)
        return cls(value["kind"], tuple(_typed(DuplicateMember, member) for member in value["members"]))

    def text(self, quote: str = "") -> str:
        """Its members as `PATH (split, label)`, kept one first, each path between `quote`s."""
        return ", ".join(f"{quote}{m.path}{quote} ({m.split}, {m.label})" for m in self.members)


def named_groups(
    groups: Sequence[DuplicateGroup], quote: str = "", listed_in: str = DUPLICATES, limit: int = NAMED_GROUPS
) -> list[str]:
    """The first `limit` groups (`DuplicateGroup.text`), one per line, then how many more `listed_in` lists."""
    more = len(groups) - limit
    return [group.text(quote) for group in groups[:limit]] + (
        [f"... and {more} more (all in {quote}{listed_in}{quote})"] if more > 0 else []
    )


def label_name(class_names: Sequence[str], label: int | Iterable[int]) -> str:
    """A record's class name from its label (UNLABELED_CLASS for -1); for a multi-label record (its class indices,
    padding -1 ignored) their names joined by LABEL_SET_SEPARATOR, or NO_LABELS."""
    if isinstance(label, Iterable):
        names = [class_names[i] for i in label if i >= 0]
        return LABEL_SET_SEPARATOR.join(names) if names else NO_LABELS
    return class_names[label] if label >= 0 else UNLABELED_CLASS


def reject_kind(reason: str) -> str:
    """A reject's reason without its particulars (what counters and the card count by): "duplicate of a.jpg" ->
    "duplicate", "cannot read file: [Errno 5] ..." -> "cannot read file"."""
    return DUPLICATE if reason.startswith(DUPLICATE_OF) else reason.split(":")[0]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `shardflow.json` records about a dataset, and where it was read from (`data_dir`)."""

    name: str
    class_names: tuple[str, ...]
    channels: int
    image_format: str
    max_side: int | None
    quality: int
    layout: str
    num_inputs: int
    num_rejected: int
    num_unselected: int
    ignored: tuple[str, ...]  # files beside the data, skipped by rule
    splits: dict[str, Split]  # in reading order (split_names)
    seconds: float
    size: tuple[int, int] | None = None  # --size: every image stored at this (height, width)
    crop_to_aspect_ratio: bool = False  # --crop-to-aspect-ratio: centre-cropped to that aspect before resizing
    debris: tuple[str, ...] = ()  # macOS/Windows system files (._*, .DS_Store, Thumbs.db, ...), skipped by rule
    warnings: tuple[str, ...] = ()  # what the conversion warned about (case-twin classes, short splits, ...)
    damaged_jpegs: int = 0  # records of JPEGs libjpeg decodes only with a warning (--keep-damaged-jpegs)
    multi_label: bool = False  # each record holds a set of classes (`schema.RecordSchema.multi_label`)
    labels_file: LabelsFile | None = None  # `convert --labels FILE.csv`: where the labels came from
    card: DatasetCard = DatasetCard()
    provenance: Provenance | None = None  # None: converted by a shardflow before 0.2
    duplicates: Duplicates | None = None  # None: converted by a shardflow that did not look for duplicates
    format_version: int = FORMAT_VERSION
    data_dir: str = ""

    @property
    def num_records(self) -> int:
        return sum(s.num_examples for s in self.splits.values())

    @property
    def schema(self) -> schema.RecordSchema:
        return schema.RecordSchema(self.class_names, self.channels, self.image_format, self.multi_label)

    @property
    def image_options(self) -> ImageOptions:
        """The per-image preparation the conversion applied (prediction applies it to files)."""
        return ImageOptions(
            channels=self.channels,
            image_format=self.image_format,
            max_side=self.max_side,
            quality=self.quality,
            size=self.size,
            crop_to_aspect_ratio=self.crop_to_aspect_ratio,
        )

    @property
    def stored_size(self) -> tuple[int, int] | None:
        """(height, width) when every record holds an image of that one size (`--size`, or sources such as
        MNIST whose images all have one size), else None."""
        if self.size is not None:
            return self.size
        heights = {h for s in self.splits.values() for h in s.height_range}
        widths = {w for s in self.splits.values() for w in s.width_range}
        return (heights.pop(), widths.pop()) if len(heights) == len(widths) == 1 else None

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise DatasetError(f"{self.data_dir}: no split {name!r}; it has {', '.join(self.splits) or 'none'}")
        return self.splits[name]

    def shard_paths(self, split: str) -> list[str]:
        return [files.join(self.data_dir, s.filename) for s in self.split(split).shards]

    def problems(self) -> list[str]:
        """Broken invariants: every input is a record, a reject or unselected, each exactly once."""
        accounted = self.num_records + self.num_rejected + self.num_unselected
        if self.num_inputs != accounted:
            return [
                f"lost inputs: inputs ({self.num_inputs}) != records ({self.num_records}) + rejects "
                f"({self.num_rejected}) + unselected ({self.num_unselected})"
            ]
        if not 0 <= self.damaged_jpegs <= self.num_records:
            return [f"{self.damaged_jpegs} damaged JPEGs kept among {self.num_records} records"]
        return self.duplicates.problems(self.num_records, self.num_rejected) if self.duplicates else []

    def to_json(self) -> str:
        value = dataclasses.asdict(self)
        del value["data_dir"]
        value["num_records"] = self.num_records
        for split, stats in zip(value["splits"].values(), self.splits.values()):
            split.update(num_examples=stats.num_examples, num_bytes=stats.num_bytes)
        return json.dumps(value, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, data_dir: str = "") -> DatasetInfo:
        """The inverse of `to_json`; the counts it derives must equal those written beside them."""
        value = json.loads(text)
        splits = {
            name: _typed(
                Split,
                value["splits"][name],
                name=name,
                shards=tuple(_typed(Shard, s) for s in value["splits"][name]["shards"]),
                cooccurrence=tuple(map(tuple, value["splits"][name].get("cooccurrence", []))),
            )
            for name in split_names(value["splits"])
        }
        provenance = _typed(Provenance, value["provenance"]) if value.get("provenance") else None
        found = value.get("duplicates")
        duplicates = (
            _typed(
                Duplicates,
                found,
                exact=_typed(DuplicateCounts, found["exact"]),
                near=_typed(DuplicateCounts, found["near"]),
            )
            if found
            else None
        )
        labels_file = _typed(LabelsFile, value["labels_file"]) if value.get("labels_file") else None
        info = _typed(
            cls,
            value,
            splits=splits,
            data_dir=data_dir,
            card=_typed(DatasetCard, value.get("card", {})),
            provenance=provenance,
            duplicates=duplicates,
            labels_file=labels_file,
        )
        written = [("num_records", value.get("num_records"), info.num_records)] + [
            (f"{name} {key}", value["splits"][name].get(key), getattr(split, key))
            for name, split in splits.items()
            for key in ("num_examples", "num_bytes")
        ]
        wrong = [
            f"{what} is {stored}, its shards add up to {derived}"
            for what, stored, derived in written
            if stored is not None and stored != derived
        ]
        if wrong:
            raise DatasetError(f"{data_dir}: {SHARDFLOW_INFO} contradicts itself: {'; '.join(wrong)}")
        return info


def _typed(kind: type, value: dict[str, Any], **given: Any) -> Any:
    """`kind` from the fields of `value` it declares (lists as tuples), `given` taking precedence."""
    fields = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items() if k in fields} | given)


def read(data_dir: str) -> DatasetInfo:
    """The metadata of a finished dataset; `DatasetError` naming the folder if it is not one."""
    info_path = files.join(data_dir, SHARDFLOW_INFO)
    if not files.exists(data_dir):
        raise DatasetError(f"{data_dir}: no such dataset directory")
    if not files.exists(files.join(data_dir, DATASET_INFO)):
        if files.exists(files.join(data_dir, STAGING)) or files.exists(info_path):
            raise DatasetError(
                f"{data_dir}: incomplete dataset (the conversion did not finish); "
                "run `shardflow convert ... --overwrite` again"
            )
        raise DatasetError(
            f"{data_dir}: not a shardflow dataset (no {DATASET_INFO}); create one with `shardflow convert`"
        )
    if not files.exists(info_path):
        raise DatasetError(f"{data_dir}: a TFDS dataset, but not written by shardflow (no {SHARDFLOW_INFO})")
    try:
        return DatasetInfo.from_json(files.read_text(info_path), data_dir)
    except DatasetError as error:
        raise DatasetError(f"{info_path}: {error}") from None


def json_text(value: Any) -> str:
    """`value` as one line of a .jsonl file (rejects, duplicates, damaged JPEGs): text as it is, in UTF-8 (風景,
    not \\u98a8\\u666f); in a name that is not valid UTF-8 (read with surrogateescape), each byte that is not
    stays an escape (\\udcb0), which `json.loads` turns back into the same name: lossless, and readable."""
    return _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", json.dumps(value, ensure_ascii=False))


def read_rejects(data_dir: str) -> list[dict[str, str]]:
    """The rejected inputs of a dataset, as written to rejects.jsonl."""
    text = files.read_text(files.join(data_dir, REJECTS))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_damaged_jpegs(info: DatasetInfo) -> list[dict[str, Any]]:
    """The records of damaged JPEGs a dataset kept (--keep-damaged-jpegs), as written to damaged_jpegs.jsonl;
    none for a dataset from a shardflow before it (no such file, none counted)."""
    path = files.join(info.data_dir, DAMAGED_JPEGS)
    if not info.damaged_jpegs and not files.exists(path):
        return []
    return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]


def read_duplicates(data_dir: str) -> list[DuplicateGroup]:
    """The groups of duplicates of a dataset, as written to duplicates.jsonl (by path of their first member);
    `DatasetError` for a dataset converted before the file existed."""
    path = files.join(data_dir, DUPLICATES)
    if not files.exists(path):
        raise DatasetError(
            f"{data_dir}: no {DUPLICATES} (converted by an older shardflow, or the file was "
            "removed); convert it again to list its groups of duplicates"
        )
    text = files.read_text(path)
    return [DuplicateGroup.from_json(line) for line in text.splitlines() if line.strip()]


def is_dataset_dir(path: str) -> bool:
    """Whether `path` holds a shardflow dataset, finished or not (so --overwrite may delete it)."""
    return any(files.exists(files.join(path, n)) for n in (DATASET_INFO, SHARDFLOW_INFO, STAGING))


def split_names(names: Iterable[str]) -> list[str]:
    """Splits in reading order: train, validation, test, then any others."""
    return sorted(names, key=lambda n: (SPLITS.index(n) if n in SPLITS else len(SPLITS), n))
