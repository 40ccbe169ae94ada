"""The options of `shardflow convert`, their defaults and their command-line form, in one place: `shardflow
convert` and the job's own launcher (`convert.run`) parse them with `add_arguments` and `from_arguments`.
Importing this needs no Apache Beam."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from shardflow.beam_jobs import splits as splits_lib
from shardflow.core import duplicates, metadata, schema
from shardflow.core.images import ImageOptions
from shardflow.core.metadata import DatasetCard

LAYOUTS = ("auto", "kaggle", "folders", "idx")
CHANNELS = (1, 3)
RUN_ONLY = ("workers", "overwrite")  # how a conversion runs, not what it makes (`--like` takes only these)
MULTI_LABEL_SPLIT_COUNTS = (
    "`split_counts` takes exact records per class, which images of several classes each "
    "(multi-label) cannot give; use `splits` fractions (by a stable hash of the path)"
)


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """Options of `shardflow convert`; None means "the source's default" (IDX: 1 channel, PNG)."""

    name: str | None = None
    layout: str = "auto"
    unlabeled: bool = False
    class_names: tuple[str, ...] | None = None
    zip_encoding: str | None = None  # a zip's legacy code page (cp949...) for names neither UTF-8 nor marked so
    splits: dict[str, float] = dataclasses.field(default_factory=lambda: dict(splits_lib.DEFAULT_SPLITS))
    split_counts: dict[str, int] | None = None
    split_counts_allow_fewer: bool = False  # take what exists when a class has fewer images than asked
    validation_from_train: float | None = None  # of a source's own train split (IDX, train/ folders)
    other_split_names: bool = False  # split names besides train, validation, test
    channels: int | None = None
    image_format: str | None = None
    max_side: int | None = None
    quality: int = ImageOptions.quality
    size: int | str | tuple[int, int] | None = None  # S, "HxW" or (height, width): every image at exactly that size
    crop_to_aspect_ratio: bool = False  # with size: centre-crop to its aspect ratio instead of stretching
    shard_size_mb: float = 128.0
    dedupe: str | None = None  # "exact" or "near": keep one image per group of duplicates (None: keep all, report)
    keep_damaged_jpegs: bool = False  # JPEGs libjpeg decodes only with a warning: records (listed), not rejects
    workers: int = 0  # 0: one per core
    overwrite: bool = False
    card: DatasetCard = DatasetCard()  # version, description, homepage, license, citation
    labels: str | None = None  # a CSV file of image ids and their labels (`csv_labels`); None: from the layout
    id_column: str | None = None  # with labels: its column of image ids (None: the one naming the source's files)
    label_columns: tuple[str, ...] | None = None  # with labels: class names or tags, or one 0/1 column per class
    label_separator: str | None = None  # with labels: between tags in one column ("none": no tags; None: detect)
    multi_label: bool = False  # with labels: multi-hot labels even when every row names one class

    def __post_init__(self):
        """ValueError naming the first option out of range (by its parameter name, in backticks)."""
        if self.layout not in LAYOUTS:
            raise ValueError(f"`layout` must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.channels is not None and self.channels not in CHANNELS:
            raise ValueError(f"`channels` must be 1 or 3, got {self.channels!r}")
        if self.image_format is not None and self.image_format not in schema.IMAGE_FORMATS:
            raise ValueError(
                f"`image_format` must be one of {', '.join(schema.IMAGE_FORMATS)}, got {self.image_format!r}"
            )
        ImageOptions(
            max_side=self.max_side, quality=self.quality, size=self.size, crop_to_aspect_ratio=self.crop_to_aspect_ratio
        )  # checks those four
        if self.shard_size_mb <= 0:
            raise ValueError(f"`shard_size_mb` must be positive, got {self.shard_size_mb:g}")
        if self.workers < 0:
            raise ValueError(f"`workers` must be 0 (one per core) or more, got {self.workers}")
        if self.dedupe is not None:
            duplicates.check_kind(self.dedupe, "dedupe")
        if self.zip_encoding is not None:
            check_zip_encoding(self.zip_encoding)
        self._check_splits()
        self._check_labels()

    def _check_splits(self) -> None:
        splits_lib.check_fractions(self.splits)
        splits_lib.check_names(self.splits, "splits", self.other_split_names)
        splits_lib.check_counts(self.split_counts or {})
        splits_lib.check_names(self.split_counts or {}, "split_counts", self.other_split_names)
        if self.split_counts_allow_fewer and not self.split_counts:
            raise ValueError("`split_counts_allow_fewer` goes with `split_counts`")
        if self.validation_from_train is not None and not 0 < self.validation_from_train < 1:
            raise ValueError(
                f"`validation_from_train` must be between 0 and 1 (exclusive), got {self.validation_from_train:g}"
            )

    def _check_labels(self) -> None:
        """Refuse label options that cannot apply (never ignore them)."""
        if self.labels is None:
            given = [
                f"`{name}`"
                for name, value in (
                    ("id_column", self.id_column),
                    ("label_columns", self.label_columns),
                    ("label_separator", self.label_separator),
                    ("multi_label", self.multi_label),
                )
                if value
            ]
            if given:
                raise ValueError(f"{', '.join(given)}: only with `labels` FILE.csv")
            return
        if self.unlabeled or self.layout != "auto":
            raise ValueError(
                f"`labels` takes the labels from {self.labels}; drop "
                + ("`unlabeled`" if self.unlabeled else f"`layout` {self.layout}")
            )
        if self.label_separator == "":
            raise ValueError("`label_separator` is empty; give the text between tags, or none")
        if self.multi_label and self.split_counts is not None:
            raise ValueError(MULTI_LABEL_SPLIT_COUNTS)

    def recorded(self) -> dict[str, Any]:
        """These options as JSON values for a dataset's provenance (splits as text: their order matters)."""
        return dataclasses.asdict(self) | {
            "splits": splits_lib.format_splits(self.splits),
            "split_counts": splits_lib.format_splits(self.split_counts) if self.split_counts else None,
        }

    @classmethod
    def like(cls, recorded: dict[str, Any], **given: Any) -> ConvertOptions:
        """The inverse of `recorded`, `given` options (workers, overwrite) replacing the recorded ones."""
        value = {f.name: recorded[f.name] for f in dataclasses.fields(cls) if f.name in recorded}
        value["card"] = DatasetCard(**value["card"])
        value["class_names"] = tuple(value["class_names"]) if value.get("class_names") else None
        value["label_columns"] = tuple(value["label_columns"]) if value.get("label_columns") else None
        value["splits"] = splits_lib.parse_splits(value["splits"])
        value["split_counts"] = splits_lib.parse_split_counts(value["split_counts"]) if value["split_counts"] else None
        return cls(**value | given)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`shardflow convert SRC OUT`'s options, defaults and choices taken from `ConvertOptions` (the CLI and
    `convert.run` parse the same)."""
    defaults = ConvertOptions()
    parser.add_argument("src", help="a folder, a .zip, a .tar/.tar.gz/.tgz, or a folder of IDX files")
    parser.add_argument("out", help="the dataset folder to create")
    parser.add_argument("--name", help="dataset name used in shard file names (default: from SRC)")
    parser.add_argument(
        "--layout",
        default=defaults.layout,
        choices=LAYOUTS,
        help="how labels are found: auto detects Kaggle names, class folders or IDX files",
    )
    parser.add_argument("--unlabeled", action="store_true", help="no labels (e.g. Kaggle's test1/): label -1")
    parser.add_argument("--class-names", help="comma-separated class order (default: sorted)")
    parser.add_argument(
        "--zip-encoding",
        metavar="CODEPAGE",
        help="a .zip's names are in this legacy code page (cp949: Korean Windows, cp932: Japanese) "
        "unless marked UTF-8; without it: UTF-8 when valid, else cp437, as unzip reads them",
    )
    parser.add_argument(
        "--splits", default=splits_lib.format_splits(defaults.splits), help="fractions by a stable hash of the path"
    )
    parser.add_argument("--split-counts", help="exact records per class, e.g. train=1000,validation=500,test=500")
    parser.add_argument(
        "--split-counts-allow-fewer",
        action="store_true",
        help="with --split-counts: a class with fewer images fills the splits in order with what "
        "it has (default: refuse)",
    )
    parser.add_argument(
        "--validation-from-train",
        type=float,
        metavar="FRACTION",
        help="for a source with its own train and test splits (IDX files, train/ and test/ "
        "folders): move this fraction of train, by a stable hash of the path, to a "
        "validation split",
    )
    parser.add_argument(
        "--other-split-names",
        action="store_true",
        help="allow --splits/--split-counts names besides train, validation (or val, valid, dev) "
        "and test, which the trainer ignores",
    )
    parser.add_argument("--channels", type=int, choices=CHANNELS, help="3 = RGB (default; IDX: 1)")
    parser.add_argument(
        "--image-format",
        choices=schema.IMAGE_FORMATS,
        help="how records store images: passthrough keeps valid JPEGs byte for byte and "
        "re-encodes the rest; jpeg and png re-encode all; raw stores pixels (default: "
        "passthrough; IDX: png)",
    )
    parser.add_argument("--max-side", type=int, help="downscale so the longer side is at most N pixels")
    parser.add_argument(
        "--size",
        default=defaults.size,
        help="store every image at exactly S x S or HxW pixels (stretched; `load` then only "
        "decodes); excludes --max-side",
    )
    parser.add_argument(
        "--crop-to-aspect-ratio",
        action="store_true",
        help="with --size: centre-crop to its aspect ratio instead of stretching",
    )
    parser.add_argument("--quality", type=int, default=defaults.quality, help="JPEG quality when re-encoding")
    parser.add_argument("--shard-size-mb", type=float, default=defaults.shard_size_mb, help="target shard size")
    parser.add_argument(
        "--dedupe",
        choices=duplicates.KINDS,
        default=defaults.dedupe,
        help="keep one image per group of duplicates (exact: the same decoded pixels; near: also "
        "re-encoded, resized look-alikes), the smallest path; the others go to rejects.jsonl. "
        "Without it, duplicates and leaks across splits are reported, nothing is removed",
    )
    parser.add_argument(
        "--keep-damaged-jpegs",
        action="store_true",
        help="keep JPEGs whose compressed data is damaged but still decodes (libjpeg warns, e.g. "
        "'corrupt JPEG data: 521 extraneous bytes before marker 0xd9'; the picture is usually "
        f"garbled) as records, listed with the warning in {metadata.DAMAGED_JPEGS} (default: "
        f"reject them, the reason in {metadata.REJECTS})",
    )
    parser.add_argument(
        "--workers", type=int, default=defaults.workers, help="local worker processes (0: one per core)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    labels = parser.add_argument_group(
        "labels from a CSV file",
        "Kaggle's id,label (one class per image), id,tags (space- or |-separated) or "
        "id,class1,class2,... (one 0/1 column per class); each option only where detection cannot tell",
    )
    labels.add_argument(
        "--labels",
        metavar="FILE.csv",
        help="label the source's images by this CSV file of ids (a file's path or name, with or "
        f"without its extension): an image without a row is rejected, rows without an image "
        f"are listed in {metadata.LABELS_WITHOUT_IMAGES}",
    )
    labels.add_argument("--id-column", metavar="NAME", help="its column of image ids (default: the one naming files)")
    labels.add_argument(
        "--label-column",
        dest="label_columns",
        metavar="NAME[,NAME...]",
        help="its column of class names or tags, or its 0/1 columns, one per class (default: the "
        "only other column, or all others when each holds only 0 and 1)",
    )
    labels.add_argument(
        "--label-separator",
        metavar="SEP",
        help="between tags in the label column, e.g. ' ' or '|'; none: each value is one class "
        "(default: '|' or ';' when a value holds one; a space in a column named tags or labels)",
    )
    labels.add_argument(
        "--multi-label",
        action="store_true",
        help="multi-hot labels even when every row names one class (default: when some row names several)",
    )
    card = parser.add_argument_group("dataset card", "what TFDS's DatasetInfo and OUT/README.md say")
    card.add_argument(
        "--version",
        default=defaults.card.version,
        help="MAJOR.MINOR.PATCH; with OUT at ROOT/NAME/VERSION, tfds.load('NAME:VERSION', data_dir=ROOT)",
    )
    card.add_argument("--description", help="what the data is (default: counts and layout)")
    card.add_argument("--homepage", help="where the data comes from")
    card.add_argument("--license", help="e.g. CC-BY-4.0")
    card.add_argument("--citation", help="a BibTeX file, or the citation text")


def from_arguments(args: argparse.Namespace) -> ConvertOptions:
    """The options parsed by `add_arguments` (`ConvertOptions` checks them)."""
    given = {name: getattr(args, name) for name in argument_names() if hasattr(args, name)}
    card = {field.name: given.pop(field.name) or "" for field in dataclasses.fields(DatasetCard)}
    return ConvertOptions(
        **given
        | {
            "class_names": tuple(c.strip() for c in args.class_names.split(",")) if args.class_names else None,
            "splits": splits_lib.parse_splits(args.splits),
            "split_counts": splits_lib.parse_split_counts(args.split_counts) if args.split_counts else None,
            "label_columns": tuple(c.strip() for c in args.label_columns.split(",")) if args.label_columns else None,
            "card": DatasetCard(**card | {"citation": _text_or_file(args.citation)}),
        }
    )


def argument_names() -> list[str]:
    """`ConvertOptions`' fields as `add_arguments` names them: the card's own fields in the card's place."""
    names = []
    for field in dataclasses.fields(ConvertOptions):
        names += [f.name for f in dataclasses.fields(DatasetCard)] if field.name == "card" else [field.name]
    return names


def local_workers(beam_args: Sequence[str], workers: int) -> int | None:
    """How many local worker processes a conversion with Beam options `beam_args` runs: with no --runner, Beam's
    in-process runner and `workers` (0: one per core); None with a --runner."""
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        return None
    return workers or os.cpu_count() or 1


def check_zip_encoding(name: str) -> None:
    """ValueError unless `name` is a text encoding Python knows (a code page such as cp949, cp932, cp866)."""
    try:
        b"a".decode(name)
    except LookupError:  # unknown, or a bytes-to-bytes codec such as base64
        raise ValueError(
            f"`zip_encoding` {name!r} is not a text encoding Python knows; give a code page such as "
            "cp949 (Korean Windows), cp932 (Japanese), cp936 (Chinese) or cp866 (Russian)"
        ) from None


def _text_or_file(value: str | None) -> str:
    """--citation takes a file (a .bib, say) or the text itself."""
    if value and os.path.isfile(value):
        with open(value) as f:
            return f.read()
    return value or ""
