"""The architectures the tutorials teach, bare (no preprocessing layers), with their parameter counts intact.

`build(name, input_shape, num_classes)` returns the model, `normalization_for(name)` the input scaling it
expects (the names, bases and the tutorials' optimizers are in `shardflow.trainers.options`).
Two classes get one sigmoid unit (binary crossentropy), more get a softmax; a multi-label dataset
(`multi_label=True`) one sigmoid unit per class (binary crossentropy, per class), scored by `metrics_for`.
"""

from __future__ import annotations

import functools
import urllib.error
from collections.abc import Callable

import keras
from keras import layers

from shardflow.trainers.options import BASES, FEATURES, MODELS, ON_A_BASE


def output_layer(num_classes: int, multi_label: bool = False) -> layers.Dense:
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if multi_label:
        return layers.Dense(num_classes, activation="sigmoid")
    return (
        layers.Dense(1, activation="sigmoid") if num_classes == 2 else layers.Dense(num_classes, activation="softmax")
    )


def loss_for(num_classes: int, multi_label: bool = False) -> str:
    return "binary_crossentropy" if num_classes == 2 or multi_label else "sparse_categorical_crossentropy"


def metrics_for(num_classes: int, multi_label: bool = False) -> list[str | keras.metrics.Metric]:
    """What training reports: accuracy; for multi-label, the per-class accuracy at 0.5 (as "accuracy"), the
    macro-averaged ROC AUC ("auc") and the macro-averaged F1 score at 0.5 ("f1")."""
    if not multi_label:
        return ["accuracy"]
    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.AUC(multi_label=True, num_labels=num_classes, name="auc"),
        keras.metrics.F1Score(average="macro", threshold=0.5, name="f1"),
    ]


def normalization_for(name: str, base: str = "vgg16") -> str:
    """The `Normalize` mode a model expects: the base's own preprocessing for transfer models, else x/255."""
    if name in ON_A_BASE:
        return BASES[base][1]
    return "rescale"


def build(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    base: str = "vgg16",
    weights: str | None = None,
    unfreeze: int = 3,
    multi_label: bool = False,
) -> keras.Model:
    """The bare architecture `name` for images of `input_shape` (`multi_label`: a sigmoid unit per class).

    Example:
      >>> build("small_convnet", (150, 150, 3), 2).count_params()
      9494561
    """
    if name not in MODELS:
        raise ValueError(f"unknown `name` {name!r}; choose one of {', '.join(MODELS)}")
    if name == FEATURES:
        raise ValueError(
            "the 'features' model trains on extracted features: use features_head() "
            "on the output of feature_extractor()"
        )
    if name in ON_A_BASE:
        model = transfer(input_shape, num_classes, base=base, weights=weights, multi_label=multi_label)
        if name == "fine_tune":
            unfreeze_top(model, unfreeze)
        return model
    inputs = keras.Input(input_shape)
    try:
        return keras.Model(inputs, _CONVNETS[name](inputs, num_classes, multi_label), name=name)
    except ValueError as error:
        if "output size would be zero or negative" not in str(error):
            raise
        raise ValueError(
            f"images of {input_shape[0]}x{input_shape[1]} are too small for {name}: its convolutions "
            f"and poolings need at least {minimum_image_size(name)}x{minimum_image_size(name)} "
            "(`image_size`)"
        ) from None


@functools.cache
def minimum_image_size(name: str) -> int:
    """The smallest square input the convnet `name` can take (each convolution and pooling shrinks it)."""
    for size in range(1, 1024):
        try:
            _CONVNETS[name](keras.Input((size, size, 1)), 2)
            return size
        except ValueError:
            continue
    raise ValueError(f"{name}: no input size up to 1024 fits")


def _small_convnet(x, num_classes, multi_label=False):
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    return output_layer(num_classes, multi_label)(x)


def _book_convnet(x, num_classes, multi_label=False):
    for filters in (32, 64, 128, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(512, activation="relu")(x)
    return output_layer(num_classes, multi_label)(x)


def _mnist_convnet(x, num_classes, multi_label=False):
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    return output_layer(num_classes, multi_label)(x)


def _fashion_cnn(x, num_classes, multi_label=False):
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(100, activation="relu")(x)
    x = layers.Dropout(0.4)(x)
    return output_layer(num_classes, multi_label)(x)


_CONVNETS: dict[str, Callable] = {
    "small_convnet": _small_convnet,
    "book_convnet": _book_convnet,
    "mnist_convnet": _mnist_convnet,
    "fashion_cnn": _fashion_cnn,
}


def base_model(base: str, input_shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    """A Keras-applications convolutional base without its classifier, frozen.

    `weights`: "imagenet" (downloads where there is internet), a local weights file, or None/"none".
    """
    if base not in BASES:
        raise ValueError(f"unknown `base` {base!r}; choose one of {', '.join(BASES)}")
    weights = None if weights in (None, "none") else weights
    constructor = getattr(keras.applications, BASES[base][0])
    try:
        model = constructor(include_top=False, weights=weights, input_shape=input_shape)
    except Exception as error:  # Keras' get_file raises a bare Exception from the URLError
        if not isinstance(error.__context__, urllib.error.URLError):
            raise
        raise ValueError(
            f"could not download the {base} ImageNet weights ({error.__context__.reason}); pass "
            "`weights` FILE (those weights, saved where there is internet) or `weights` none "
            "(random weights)"
        ) from None
    model.trainable = False
    return model


def transfer(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    base: str = "vgg16",
    weights: str | None = None,
    multi_label: bool = False,
) -> keras.Model:
    """Frozen base + GlobalAveragePooling2D + Dense output (the tfds cats_vs_dogs / tf_flowers tutorial)."""
    inputs = keras.Input(input_shape)
    convolutional = base_model(base, input_shape, weights)
    x = convolutional(inputs, training=False)  # keeps BatchNormalization in inference mode when fine-tuning
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, output_layer(num_classes, multi_label)(x), name=f"transfer_{base}")


def unfreeze_top(model: keras.Model, layers_to_unfreeze: int) -> None:
    """Make the top `layers_to_unfreeze` weighted layers of the base trainable (fine-tuning; 3 is VGG16's block5,
    as in Deep Learning with Python)."""
    convolutional = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    convolutional.trainable = True
    weighted = [layer for layer in convolutional.layers if layer.weights]
    for layer in weighted[:-layers_to_unfreeze] if layers_to_unfreeze > 0 else weighted:
        layer.trainable = False


def feature_extractor(base: str, input_shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    """The frozen base alone: run once per split to turn images into features (e.g. 4x4x512 for VGG16 at 150)."""
    return base_model(base, input_shape, weights)


def features_head(feature_shape: tuple[int, ...], num_classes: int, multi_label: bool = False) -> keras.Model:
    """Dense 256 + Dropout 0.5 + output on flattened features (Deep Learning with Python, 5.3.1)."""
    inputs = keras.Input(feature_shape)
    x = layers.Flatten()(inputs)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, output_layer(num_classes, multi_label)(x), name="features_head")
