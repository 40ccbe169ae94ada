"""The knobs of `shardflow train`, their defaults and their command-line form, in one place (`add_arguments`,
`from_arguments`), and the models' names: importing this needs no TensorFlow."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

BASES: dict[str, tuple[str, str]] = {  # --base: (keras.applications constructor, its input preprocessing)
    "vgg16": ("VGG16", "vgg16"),
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2"),
    "efficientnet_b0": ("EfficientNetB0", "efficientnet_b0"),
    "resnet50": ("ResNet50", "resnet50"),
}
TRAINING_DEFAULTS: dict[str, tuple[str, float]] = {  # the tutorial's optimizer and learning rate per model
    "small_convnet": ("rmsprop", 1e-3),
    "book_convnet": ("rmsprop", 1e-4),
    "mnist_convnet": ("rmsprop", 1e-3),
    "fashion_cnn": ("adam", 1e-3),
    "transfer": ("rmsprop", 1e-4),
    "fine_tune": ("rmsprop", 1e-5),
    "features": ("adam", 1e-4),
}
MODELS = tuple(TRAINING_DEFAULTS)
ON_A_BASE = frozenset({"transfer", "fine_tune", "features"})  # on a Keras-applications base: --base, --weights, RGB
FEATURES = "features"  # trains a head on the base's features, extracted once
IMAGE_SIZES = {"mnist_convnet": 28, "fashion_cnn": 28, "transfer": 160, "fine_tune": 160}  # the tutorials'
IMAGE_SIZE = 150  # the others'
BATCH_SIZES = {"features": 64}  # the book trains the feature-extraction head with batch 64
BATCH_SIZE = 32
VALIDATION_SPLIT = 0.1  # of train, held out for validation when a dataset has no validation split (`Holdout`)
AUGMENT_PLACES = ("auto", "model", "pipeline")  # of resize + augmentation; auto: the model with a GPU, else the CPU
IMAGE_SIZE_RANGE = (8, 4096)  # pixels per side a run takes
THRESHOLD = 0.5  # multi-label: a class is predicted when its sigmoid output is above this (F1, predict's tags)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """What `shardflow train` does; None means the model's default."""

    model: str = "small_convnet"
    epochs: int = 30
    batch_size: int | None = None
    image_size: int | None = None  # None: the dataset's stored size (square, `convert --size`), else the model's
    validation_split: float | None = None  # None: VALIDATION_SPLIT, when the dataset has no validation split
    augment: str | dict[str, Any] | None = None
    augment_on: str = "auto"  # one of AUGMENT_PLACES
    optimizer: str | None = None
    lr: float | None = None
    patience: int | None = None
    mixed_precision: bool = False
    jit: bool = False
    seed: int | None = None
    base: str = "vgg16"
    weights: str = "imagenet"  # imagenet (Keras downloads it), a weights file, or "none"
    unfreeze: int = 3
    init_from: str | None = None  # fine_tune: a finished transfer run to start from
    steps_per_epoch: int | None = None
    cache: bool = False
    overwrite: bool = False  # replace an existing run folder
    checkpoint_every: int | None = None  # steps between checkpoints (`resume`); SIGTERM/SIGINT always write one
    resume: bool = False  # continue the run in the folder from its checkpoint, at the next batch
    verbose: int = 2

    def __post_init__(self):
        """ValueError naming the first option out of range (by its parameter name, in backticks)."""
        for name, value, choices in (
            ("model", self.model, MODELS),
            ("augment_on", self.augment_on, AUGMENT_PLACES),
            ("base", self.base, tuple(BASES)),
        ):
            if value not in choices:
                raise ValueError(f"unknown `{name}` {value!r}; choose one of {', '.join(choices)}")
        for name, value in (
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("steps_per_epoch", self.steps_per_epoch),
            ("checkpoint_every", self.checkpoint_every),
        ):
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be at least 1, got {value}")
        low, high = IMAGE_SIZE_RANGE
        if self.image_size is not None and not low <= self.image_size <= high:
            raise ValueError(f"`image_size` must be between {low} and {high} pixels, got {self.image_size}")
        if self.validation_split is not None and not 0 <= self.validation_split < 1:
            raise ValueError(f"`validation_split` must be at least 0 and below 1, got {self.validation_split:g}")
        if self.resume and self.overwrite:
            raise ValueError("`resume` continues the run in the folder, `overwrite` replaces it: pass one of them")
        if self.init_from and self.model != "fine_tune":
            raise ValueError("`init_from` is for `model` fine_tune (it continues a finished transfer run)")

    def with_model_defaults(self, stored_size: tuple[int, int] | None = None) -> TrainOptions:
        """These options with the batch and image size filled in where they are None: the image size of a dataset
        stored at one square size (`stored_size`), else the model's."""
        square = stored_size[0] if stored_size and stored_size[0] == stored_size[1] else None
        return dataclasses.replace(
            self,
            batch_size=self.batch_size or BATCH_SIZES.get(self.model, BATCH_SIZE),
            image_size=self.image_size or square or IMAGE_SIZES.get(self.model, IMAGE_SIZE),
        )

    def image_size_source(self, stored_size: tuple[int, int] | None) -> str:
        """Where `with_model_defaults(stored_size)` takes the image size from, for the start line."""
        if self.image_size:
            return "`image_size`"
        if stored_size and stored_size[0] == stored_size[1]:
            return "the dataset's stored size"
        return f"{self.model}'s default" + (
            f"; the dataset's images are {stored_size[0]}x{stored_size[1]}" if stored_size else ""
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`shardflow train DATA --out RUN`'s options, defaults and choices taken from `TrainOptions`."""
    defaults = TrainOptions()
    batch_sizes = ", ".join(f"{size} for {model}" for model, size in BATCH_SIZES.items())
    image_sizes = ", ".join(f"{size} for {model}" for model, size in IMAGE_SIZES.items())
    optimizers = " or ".join(sorted({optimizer for optimizer, _ in TRAINING_DEFAULTS.values()}))
    parser.add_argument("data", help="a dataset folder written by `shardflow convert`")
    parser.add_argument("--out", required=True, help="the run folder to write")
    parser.add_argument("--model", default=defaults.model, choices=MODELS, help="the tutorial architecture")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training data")
    parser.add_argument("--batch-size", type=int, help=f"images per step (default: {BATCH_SIZE}; {batch_sizes})")
    parser.add_argument(
        "--image-size",
        type=int,
        help="pixels per side the model sees (default: the dataset's size when it is stored at one "
        f"square size (convert --size), else {IMAGE_SIZE}; {image_sizes})",
    )
    parser.add_argument(
        "--validation-split",
        type=float,
        help="for a dataset without a validation split: the fraction of train held out (by a stable "
        "hash of each path) to choose epochs and checkpoints; 0: none. The test split is never "
        f"used to choose (default: {VALIDATION_SPLIT:g})",
    )
    parser.add_argument(
        "--augment", default=defaults.augment, help="none, a preset (seed004) or ImageDataGenerator arguments as JSON"
    )
    parser.add_argument(
        "--augment-on",
        default=defaults.augment_on,
        choices=AUGMENT_PLACES,
        help="where the resize to --image-size and the augmentation run; auto: in the model (the "
        "pipeline only decodes the stored size) with a GPU, else in the CPU pipeline",
    )
    parser.add_argument("--optimizer", help=f"a Keras optimizer name (default: the tutorial's, {optimizers})")
    parser.add_argument("--lr", type=float, help="learning rate (default: the tutorial's)")
    parser.add_argument(
        "--patience", type=int, help="stop after N epochs without a better validation loss (default: train every epoch)"
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="compute in float16 with float32 weights (Keras' mixed_float16 policy)",
    )
    parser.add_argument("--jit", action="store_true", help="XLA-compile the model")
    parser.add_argument("--seed", type=int, help="repeatable shuffling, augmentation and initial weights")
    parser.add_argument(
        "--base",
        default=defaults.base,
        choices=tuple(BASES),
        help="the Keras-applications base of " + ", ".join(sorted(ON_A_BASE)),
    )
    parser.add_argument(
        "--weights", default=defaults.weights, help="the base's weights: imagenet (downloads), a weights file, or none"
    )
    parser.add_argument(
        "--unfreeze", type=int, default=defaults.unfreeze, help="fine_tune: top layers of the base to train"
    )
    parser.add_argument("--init-from", help="fine_tune: a finished transfer run to continue from (its model.keras)")
    parser.add_argument("--steps-per-epoch", type=int, help="limit each epoch to N steps (quick trials)")
    parser.add_argument("--cache", action="store_true", help="keep decoded images in memory after epoch 1")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        help="write a checkpoint to resume from every N steps (SIGTERM and SIGINT always write one before exiting)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint at the next batch (the same arguments, and --seed for "
        "exactly the batches of an uninterrupted run)",
    )


def from_arguments(args: argparse.Namespace) -> TrainOptions:
    """The options parsed by `add_arguments` (`TrainOptions` checks them)."""
    return TrainOptions(
        **{
            field.name: getattr(args, field.name)
            for field in dataclasses.fields(TrainOptions)
            if hasattr(args, field.name)
        }
    )
