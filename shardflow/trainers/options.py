"""The knobs of `shardflow train` and their defaults, in one place (the CLI takes its defaults from here), and
the models' names: importing this needs no TensorFlow."""
from __future__ import annotations

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
IMAGE_SIZES = {"mnist_convnet": 28, "fashion_cnn": 28, "transfer": 160, "fine_tune": 160}  # the tutorials'
IMAGE_SIZE = 150  # the others'
BATCH_SIZES = {"features": 64}  # the book trains the feature-extraction head with batch 64
BATCH_SIZE = 32
VALIDATION_SPLIT = 0.1  # of train, held out for validation when a dataset has no validation split (`Holdout`)
AUGMENT_PLACES = ("auto", "model", "pipeline")  # of resize + augmentation; auto: the model with a GPU, else the CPU
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
    verbose: int = 2

    def with_model_defaults(self, stored_size: tuple[int, int] | None = None) -> TrainOptions:
        """These options with the batch and image size filled in where they are None: the image size of a dataset
        stored at one square size (`stored_size`), else the model's."""
        square = stored_size[0] if stored_size and stored_size[0] == stored_size[1] else None
        return dataclasses.replace(self, batch_size=self.batch_size or BATCH_SIZES.get(self.model, BATCH_SIZE),
                                   image_size=self.image_size or square or IMAGE_SIZES.get(self.model, IMAGE_SIZE))

    def image_size_source(self, stored_size: tuple[int, int] | None) -> str:
        """Where `with_model_defaults(stored_size)` takes the image size from, for the start line."""
        if self.image_size:
            return "--image-size"
        if stored_size and stored_size[0] == stored_size[1]:
            return "the dataset's stored size"
        return f"{self.model}'s default" + (f"; the dataset's images are {stored_size[0]}x{stored_size[1]}"
                                            if stored_size else "")
