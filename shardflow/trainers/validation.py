"""What a run validates on (early stopping, the kept checkpoint): the dataset's validation split, else a part of
train held out by a stable path hash (`Holdout`); never the test split, which only reports the chosen model."""

from __future__ import annotations

import dataclasses
from typing import Any

from shardflow.core import metadata
from shardflow.pipeline.holdout import Holdout
from shardflow.trainers.options import VALIDATION_SPLIT


@dataclasses.dataclass(frozen=True)
class Part:
    """What one stream reads: a split, or a held-out part of it (or the rest of it)."""

    split: str
    holdout: Holdout | None = None

    def describe(self) -> str:
        return self.holdout.describe(self.split) if self.holdout else f"the {self.split} split"

    def recorded(self) -> dict[str, Any]:
        """For run.json and metrics.json: the split and, when held out, the fraction and the rule."""
        if self.holdout is None:
            return {"split": self.split}
        return {"split": self.split, "held_out_fraction": self.holdout.fraction, "rule": self.describe()}


def validation_part(info: metadata.DatasetInfo, validation_split: float | None) -> Part | None:
    """The dataset's validation split; else `validation_split` (default `VALIDATION_SPLIT`) of train held out;
    None for `validation_split=0` (checkpoints and early stopping then follow the training loss)."""
    if metadata.VALIDATION in info.splits:
        if validation_split is not None:
            raise ValueError(
                f"`validation_split` does not apply: {info.data_dir} has its own validation split "
                f"({info.split(metadata.VALIDATION).num_examples} images), which the run validates on"
            )
        return Part(metadata.VALIDATION)
    fraction = VALIDATION_SPLIT if validation_split is None else validation_split
    return Part(metadata.TRAIN, Holdout(fraction)) if fraction else None
