"""`ReadConfig`: how `load` reads a split, as one frozen object (as `tfds.ReadConfig`), checked when it is made."""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from shardflow.core import metadata
from shardflow.core.images import parse_size
from shardflow.pipeline import augment as augment_lib
from shardflow.pipeline.epochs import epoch_seed
from shardflow.pipeline.holdout import Holdout

BACKENDS = ("tf", "dali")


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    """The reading knobs of `load` (see its arguments), checked when made: a ValueError names the parameter."""

    batch_size: int
    image_size: int | tuple[int, int] | None
    shuffle: bool | None = None  # None: only "train" (`for_split`)
    seed: int | None = None
    augment: str | dict[str, Any] | None = None
    crop_to_aspect_ratio: bool = False
    repeat: bool = False
    cache: bool | str = False
    take: int | None = None
    drop_remainder: bool = False
    shuffle_buffer: int = 2048
    input_context: tf.distribute.InputContext | None = None
    data_service: str | None = None
    backend: str = "tf"
    holdout: Holdout | None = None
    epoch: int | tf.Tensor | None = None  # the pass's shuffle and augmentation seeds from (seed, epoch) alone
    skip: int | tf.Tensor = 0  # batches left out at the start: read, never decoded (unless cached)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive number of images, got {self.batch_size}")
        if self.image_size is not None:
            parse_size(self.image_size, "image_size")
        augment_lib.parse_augment(self.augment)
        if self.shuffle_buffer < 1:
            raise ValueError(f"`shuffle_buffer` must be at least 1, got {self.shuffle_buffer}")
        if isinstance(self.skip, int) and self.skip < 0:
            raise ValueError(f"`skip` must not be negative, got {self.skip}")
        if self.take is not None and self.take < 0:
            raise ValueError(f"`take` must not be negative, got {self.take}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown `backend` {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.backend == "dali":
            self._check_dali()

    def _check_dali(self) -> None:
        """Refuse what DALI's reader cannot do."""
        unsupported = [
            f"`{name}`"
            for name, used in (
                ("cache", bool(self.cache)),
                ("take", self.take is not None),
                ("data_service", bool(self.data_service)),
                ("holdout", self.holdout is not None),
                ("epoch", self.epoch is not None),
                ("skip", not isinstance(self.skip, int) or self.skip > 0),
            )
            if used
        ]
        if unsupported:
            raise ValueError(f"`backend` 'dali' does not support {', '.join(unsupported)}")

    def for_split(self, split: str) -> ReadConfig:
        """This config with `shuffle` decided: unless given, only the "train" split is shuffled."""
        return self if self.shuffle is not None else dataclasses.replace(self, shuffle=split == metadata.TRAIN)

    @property
    def pass_seed(self) -> int | tf.Tensor | None:
        """The seed of this pass's shuffles and augmentation: `seed`, or with an `epoch` `epoch_seed`'s."""
        return self.seed if self.epoch is None else epoch_seed(self.seed, self.epoch)

    @property
    def deterministic(self) -> bool:
        """Whether the order is repeatable (a `seed`, or nothing shuffled); otherwise faster, in any order."""
        return self.seed is not None or not self.shuffle
