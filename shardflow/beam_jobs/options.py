"""The options of `shardflow convert` and their defaults, in one place (the CLI takes its defaults from here).
Importing this needs no Apache Beam."""
from __future__ import annotations

import dataclasses
from typing import Any

from shardflow.beam_jobs import splits as splits_lib
from shardflow.images import ImageOptions
from shardflow.metadata import DatasetCard

LAYOUTS = ("auto", "kaggle", "folders", "idx")
CHANNELS = (1, 3)


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """Options of `shardflow convert`; None means "the source's default" (IDX: 1 channel, PNG)."""

    name: str | None = None
    layout: str = "auto"
    unlabeled: bool = False
    class_names: tuple[str, ...] | None = None
    splits: dict[str, float] = dataclasses.field(default_factory=lambda: dict(splits_lib.DEFAULT_SPLITS))
    split_counts: dict[str, int] | None = None
    split_counts_allow_fewer: bool = False  # take what exists when a class has fewer images than asked
    channels: int | None = None
    image_format: str | None = None
    max_side: int | None = None
    quality: int = ImageOptions.quality
    size: int | str | tuple[int, int] | None = None  # S, "HxW" or (height, width): every image at exactly that size
    crop_to_aspect_ratio: bool = False  # with size: centre-crop to its aspect ratio instead of stretching
    shard_size_mb: float = 128.0
    workers: int = 0  # 0: one per core
    overwrite: bool = False
    card: DatasetCard = DatasetCard()  # version, description, homepage, license, citation

    def recorded(self) -> dict[str, Any]:
        """These options as JSON values for a dataset's provenance (splits as text: their order matters)."""
        return dataclasses.asdict(self) | {
            "splits": splits_lib.format_splits(self.splits),
            "split_counts": splits_lib.format_splits(self.split_counts) if self.split_counts else None}

    @classmethod
    def like(cls, recorded: dict[str, Any], **given: Any) -> ConvertOptions:
        """The inverse of `recorded`, `given` options (workers, overwrite) replacing the recorded ones."""
        value = {f.name: recorded[f.name] for f in dataclasses.fields(cls) if f.name in recorded}
        value["card"] = DatasetCard(**value["card"])
        value["class_names"] = tuple(value["class_names"]) if value.get("class_names") else None
        value["splits"] = splits_lib.parse_splits(value["splits"])
        value["split_counts"] = splits_lib.parse_split_counts(value["split_counts"]) if value["split_counts"] else None
        return cls(**value | given)
