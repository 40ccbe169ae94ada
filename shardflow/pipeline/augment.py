"""ImageDataGenerator's random augmentation, each image resampled once: for tf.data and as a Keras layer.

Rotation, shift, shear, zoom and flips compose into one matrix per image that maps output pixels to input
pixels, with ImageDataGenerator's conventions (`apply_affine_transform`: degrees, about the image centre, flips
after the transform). The same matrix can also change the image size, so the input pipeline's resize and the
augmentation are a single bilinear resampling (`ImageProjectiveTransformV3`). Brightness and channel shift follow;
pixel values are in 0..255 units throughout. The geometry (`affine_matrix`, `random_geometry`) is plain arithmetic,
so the DALI backend (`shardflow.pipeline.dali`) computes the same matrices from its own graph nodes.

Two conventions differ from tf_keras' ImageDataGenerator, whose versions only agree with ours on square images
with equal width/height ranges (the tutorials' case): `width_shift_range` always shifts horizontally (tf_keras
applies the height range horizontally), and non-square images turn about their true centre.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from shardflow.core.images import parse_size
from shardflow.pipeline.resize import resize

PRESETS: dict[str, dict[str, Any]] = {
    "seed004": {  # the tutorials' ImageDataGenerator(...) for cats vs dogs
        "rotation_range": 40,
        "width_shift_range": 0.2,
        "height_shift_range": 0.2,
        "shear_range": 0.2,
        "zoom_range": 0.2,
        "horizontal_flip": True,
        "fill_mode": "nearest",
    },
}
FILL_MODES = ("constant", "nearest", "reflect", "wrap")
DEFAULTS: dict[str, Any] = {
    "rotation_range": 0.0,
    "width_shift_range": 0.0,
    "height_shift_range": 0.0,
    "shear_range": 0.0,
    "zoom_range": [1.0, 1.0],
    "horizontal_flip": False,
    "vertical_flip": False,
    "brightness_range": None,
    "channel_shift_range": 0.0,
    "fill_mode": "nearest",
    "cval": 0.0,
}
_RANGES = ("rotation_range", "width_shift_range", "height_shift_range", "shear_range", "channel_shift_range")
DRAWS = 9  # uniform numbers per image besides the channel shifts: see `random_transforms`


def parse_augment(text: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """ImageDataGenerator arguments from None/"none", a preset name, a JSON object or a dict; None for none.

    The result has every argument, normalized (`zoom_range` as [low, high], floats for ranges); invalid names or
    values raise ValueError naming them.

    Example:
      >>> parse_augment('{"rotation_range": 40, "zoom_range": 0.2}')["zoom_range"]
      [0.8, 1.2]
    """
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none")):
        return None
    if isinstance(text, str):
        if text.strip() in PRESETS:
            text = PRESETS[text.strip()]
        else:
            try:
                text = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(
                    f"augment must be 'none', a preset ({', '.join(PRESETS)}) or a JSON object of "
                    f"ImageDataGenerator arguments, got {text!r}"
                ) from None
    if not isinstance(text, dict):
        raise ValueError(f"augment must be a JSON object of ImageDataGenerator arguments, got {text!r}")
    unknown = sorted(set(text) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown augmentation argument(s) {', '.join(map(repr, unknown))}; "
            f"ImageDataGenerator's are: {', '.join(DEFAULTS)}"
        )
    params = dict(DEFAULTS)
    for key, value in text.items():
        params[key] = _checked(key, value)
    return params


def _checked(key: str, value: Any) -> Any:
    def fail(expected: str):
        raise ValueError(f"augmentation argument {key}={value!r}: expected {expected}")

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if key in _RANGES:
        if not number(value) or value < 0:
            fail("a number >= 0")
        return float(value)
    if key in ("horizontal_flip", "vertical_flip"):
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if key == "fill_mode":
        if value not in FILL_MODES:
            fail(f"one of {', '.join(FILL_MODES)}")
        return value
    if key == "cval":
        if not number(value):
            fail("a number")
        return float(value)
    if key == "zoom_range":
        if number(value):
            if not 0 <= value < 1:
                fail("a number in [0, 1) or [low, high] with 0 < low <= high")
            return [1.0 - value, 1.0 + value]
    if value is None and key == "brightness_range":
        return None
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(number(v) for v in value)
        or not 0 <= value[0] <= value[1]
        or (key == "zoom_range" and value[0] <= 0)
    ):
        fail("[low, high] with 0 < low <= high" if key == "zoom_range" else "[low, high] with 0 <= low <= high")
    return [float(value[0]), float(value[1])]


def affine_matrix(
    input_size: Sequence,
    output_size: Sequence,
    *,
    theta: Any = 0.0,
    tx: Any = 0.0,
    ty: Any = 0.0,
    shear: Any = 0.0,
    zx: Any = 1.0,
    zy: Any = 1.0,
    flip_horizontal: Any = False,
    flip_vertical: Any = False,
    sin: Callable = math.sin,
    cos: Callable = math.cos,
    pixel_centre: float = 0.0,
) -> tuple[tuple[Any, ...], ...]:
    """The affine map (2 x 3 rows) from output pixel (x, y) to input pixel of an image stretched from `input_size` to
    `output_size` (height, width) and transformed there like `apply_affine_transform`.

    The geometry is written once, in plain arithmetic: the arguments may be numbers, TF tensors or DALI graph nodes
    (with their `sin` and `cos`). `theta` and `shear` in degrees, `tx` (horizontal) and `ty` (vertical) shifts in
    output pixels, zooms > 1 shrink the content; flips come last (like ImageDataGenerator). With the defaults this
    is a plain bilinear resize, pixel centres aligned like `tf.image.resize`. `pixel_centre`: where pixel 0's
    centre is in the coordinates the map is applied to (0 for TF's transforms, 0.5 for DALI's `warp_affine`).
    """
    in_h, in_w = input_size
    out_h, out_w = output_size
    cx, cy = (out_w - 1) / 2, (out_h - 1) / 2
    theta, shear = theta * (math.pi / 180), shear * (math.pi / 180)
    sin, cos = _numbers_too(sin, math.sin), _numbers_too(cos, math.cos)
    mirror_x, mirror_y = 1 - 2 * flip_horizontal, 1 - 2 * flip_vertical
    scale_x, scale_y = in_w / out_w, in_h / out_h
    c = pixel_centre
    chain = [  # applied right to left to output coordinates (x, y)
        ((1, 0, c), (0, 1, c)),
        ((scale_x, 0, (scale_x - 1) / 2), (0, scale_y, (scale_y - 1) / 2)),
        ((1, 0, cx), (0, 1, cy)),
        ((cos(theta), -sin(theta), 0), (sin(theta), cos(theta), 0)),
        ((1, 0, tx), (0, 1, ty)),
        ((1, -sin(shear), 0), (0, cos(shear), 0)),
        ((zx, 0, 0), (0, zy, 0)),
        ((1, 0, -cx), (0, 1, -cy)),
        ((mirror_x, 0, (1 - mirror_x) * cx), (0, mirror_y, (1 - mirror_y) * cy)),
        ((1, 0, -c), (0, 1, -c)),
    ]
    matrix: tuple[tuple[Any, ...], ...] = chain[0]
    for step in chain[1:]:
        matrix = tuple(
            tuple(
                _sum(_product(row[0], step[0][j]), _product(row[1], step[1][j]), row[2] if j == 2 else 0)
                for j in range(3)
            )
            for row in matrix
        )
    return matrix


def _numbers_too(function: Callable, exact: Callable) -> Callable:
    """`function` for tensors or graph nodes, `exact` for plain numbers."""
    return lambda x: exact(x) if isinstance(x, (int, float)) else function(x)


def _is(value: Any, number: float) -> bool:
    return isinstance(value, (int, float)) and value == number


def _product(a: Any, b: Any) -> Any:
    """a * b, skipping the multiplications by a literal 0 or 1 (no graph nodes for them)."""
    if _is(a, 0) or _is(b, 0):
        return 0
    return b if _is(a, 1) else a if _is(b, 1) else a * b


def _sum(*terms: Any) -> Any:
    """The sum of `terms`, leaving out literal zeros."""
    kept = [t for t in terms if not _is(t, 0)]
    total = kept[0] if kept else 0
    for term in kept[1:]:
        total = total + term
    return total


def affine_transforms(input_size: Sequence, output_size: Sequence, **geometry: Any) -> tf.Tensor:
    """[N, 8] `ImageProjectiveTransformV3` transforms (output pixel -> input pixel): `affine_matrix` of scalars or
    [N] tensors (`geometry`: its keyword arguments)."""
    values = {key: tf.cast(value, tf.float32) for key, value in geometry.items()}
    shape = tf.shape(values.get("theta", tf.zeros([])))
    for v in values.values():
        shape = tf.broadcast_dynamic_shape(shape, tf.shape(v))
    values = {key: tf.reshape(tf.broadcast_to(v, shape), [-1]) for key, v in values.items()}
    count = tf.reduce_prod(shape)
    sizes = [tf.cast(size[i], tf.float32) for size in (input_size, output_size) for i in (0, 1)]
    matrix = affine_matrix(sizes[:2], sizes[2:], sin=tf.sin, cos=tf.cos, **values)
    entries = [tf.broadcast_to(tf.cast(e, tf.float32), [count]) for row in matrix for e in row]
    return tf.stack(entries + [tf.zeros([count])] * 2, axis=-1)


def random_geometry(params: dict[str, Any], u: Sequence[Any], output_size: Sequence) -> tuple[dict[str, Any], Any]:
    """ImageDataGenerator.get_random_transform's values from `DRAWS` uniform numbers `u` in [0, 1) (TF tensors or
    DALI graph nodes): `affine_matrix`'s keyword arguments and the brightness factor."""
    out_h, out_w = output_size

    def shift(column, limit, length):  # fractions of the size below 1, pixels from 1 on
        return symmetric(column, limit) * (length if limit < 1 else 1.0)

    zoom, brightness = params["zoom_range"], params["brightness_range"] or [1.0, 1.0]
    geometry = {
        "theta": symmetric(u[0], params["rotation_range"]),
        "tx": shift(u[1], params["width_shift_range"], out_w),
        "ty": shift(u[2], params["height_shift_range"], out_h),
        "shear": symmetric(u[3], params["shear_range"]),
        "zx": zoom[0] + (zoom[1] - zoom[0]) * u[4],
        "zy": zoom[0] + (zoom[1] - zoom[0]) * u[5],
        "flip_horizontal": (u[6] < 0.5) if params["horizontal_flip"] else False,
        "flip_vertical": (u[7] < 0.5) if params["vertical_flip"] else False,
    }
    return geometry, brightness[0] + (brightness[1] - brightness[0]) * u[8]


def symmetric(u: Any, limit: float) -> Any:
    """Uniform in [-limit, limit] from uniform `u` in [0, 1)."""
    return limit * (2 * u - 1)


def random_transforms(
    params: dict[str, Any], count: Any, channels: Any, input_size: Sequence, output_size: Sequence, seed: Any
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One random draw per image, like ImageDataGenerator.get_random_transform, from a stateless `seed` [2].

    Returns the [count, 8] transforms (see `affine_transforms`), [count] brightness factors and
    [count, channels] channel shifts.
    """
    u = tf.random.stateless_uniform(tf.stack([count, DRAWS + channels]), seed=seed, dtype=tf.float32)
    sizes = [tf.cast(output_size[i], tf.float32) for i in (0, 1)]
    geometry, factors = random_geometry(params, [u[:, i] for i in range(DRAWS)], sizes)
    transforms = affine_transforms(input_size, output_size, **geometry)
    return transforms, factors, symmetric(u[:, DRAWS:], params["channel_shift_range"])


def transform_images(
    images: tf.Tensor, transforms: tf.Tensor, output_size: Any, fill_mode: str = "nearest", cval: float = 0.0
) -> tf.Tensor:
    """Bilinear resampling of float images [N, H, W, C] by `transforms` [N, 8] to `output_size` (height, width)."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.cast(output_size, tf.int32),
        fill_value=tf.constant(cval, tf.float32),
        interpolation="BILINEAR",
        fill_mode=fill_mode.upper(),
    )


def _augment(images: tf.Tensor, params: dict[str, Any], seed: Any, output_size: Any) -> tf.Tensor:
    """Float images [N, H, W, C] -> augmented, resized float images of the same dtype."""
    shape = tf.shape(images)
    transforms, brightness, shifts = random_transforms(params, shape[0], shape[3], shape[1:3], output_size, seed)
    images = transform_images(images, transforms, output_size, params["fill_mode"], params["cval"])
    if params["channel_shift_range"]:
        images = tf.clip_by_value(images + tf.cast(shifts[:, None, None, :], images.dtype), 0, 255)
    if params["brightness_range"] is not None:
        images = tf.minimum(images * tf.cast(brightness[:, None, None, None], images.dtype), 255)
    return images


def _like_input(images: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """uint8 when the input was uint8 (rounded), else float32."""
    if dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)
    return images


def augment_and_resize(
    image: tf.Tensor, size: Sequence[int], params: dict[str, Any] | None, seed: Any = None
) -> tf.Tensor:
    """One image [H, W, C] of any size -> augmented and stretched to `size` (height, width) in one resampling.

    `params` from `parse_augment` (None: a plain bilinear resize, like `tf.image.resize`); `seed` a stateless
    random key [2] (None: a fresh one). Returns uint8 for uint8 input, else float32 (0..255 units).
    Works in graph mode with a dynamic input shape (inside `tf.data.Dataset.map`).
    """
    image = tf.convert_to_tensor(image)
    images = tf.cast(image, tf.float32)[None]
    if params is None:
        transforms = affine_transforms(tf.shape(image)[:2], size)
        resized = transform_images(images, transforms, size)
    else:
        if seed is None:
            seed = tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
        resized = _augment(images, params, seed, size)
    return _like_input(resized[0], image.dtype)


def augment_batch(images: tf.Tensor, params: dict[str, Any], seed: Any) -> tf.Tensor:
    """A batch [B, H, W, C] augmented with a stateless random key `seed` [2]; uint8 stays uint8, else float32."""
    images = tf.convert_to_tensor(images)
    return _like_input(_augment(tf.cast(images, tf.float32), params, seed, tf.shape(images)[1:3]), images.dtype)


@keras.saving.register_keras_serializable(package="shardflow")
class Augment(keras.layers.Layer):
    """ImageDataGenerator's random augmentation as a layer: active with `training=True`, identity otherwise.

    Takes ImageDataGenerator's keyword arguments (see `parse_augment`) and batches [B, H, W, C] of uint8 or float
    pixels in 0..255; returns the layer's compute dtype (float16 under `mixed_float16`), one resampling per image.
    With `output_size` (the model's (height, width), or an int), the images are also stretched to that size in
    the same resampling; outside training they are only resized, like `Resize` (the input pipeline's pixels).

    Example:
      >>> import numpy as np
      >>> layer = Augment(rotation_range=40, zoom_range=0.2, horizontal_flip=True, seed=1)
      >>> images = np.random.randint(0, 256, (2, 64, 64, 3), dtype="uint8")
      >>> layer(images, training=True).shape
      TensorShape([2, 64, 64, 3])
      >>> bool(np.all(layer(images).numpy() == images))
      True
      >>> Augment(rotation_range=40, output_size=(32, 48))(images, training=True).shape
      TensorShape([2, 32, 48, 3])
    """

    def __init__(
        self,
        rotation_range: float = 0.0,
        width_shift_range: float = 0.0,
        height_shift_range: float = 0.0,
        shear_range: float = 0.0,
        zoom_range: float | Sequence[float] = 0.0,
        horizontal_flip: bool = False,
        vertical_flip: bool = False,
        brightness_range: Sequence[float] | None = None,
        channel_shift_range: float = 0.0,
        fill_mode: str = "nearest",
        cval: float = 0.0,
        output_size: int | Sequence[int] | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.params = parse_augment(
            {
                "rotation_range": rotation_range,
                "width_shift_range": width_shift_range,
                "height_shift_range": height_shift_range,
                "shear_range": shear_range,
                "zoom_range": zoom_range,
                "horizontal_flip": horizontal_flip,
                "vertical_flip": vertical_flip,
                "brightness_range": brightness_range,
                "channel_shift_range": channel_shift_range,
                "fill_mode": fill_mode,
                "cval": cval,
            }
        )
        self.output_size = None if output_size is None else parse_size(output_size, "output_size")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            images = inputs if self.output_size is None else resize(inputs, self.output_size)
            return tf.cast(images, self.compute_dtype)
        # The projective transform has float16/32/64 kernels; other compute dtypes resample in float32.
        dtype = self.compute_dtype if self.compute_dtype in ("float16", "float32", "float64") else "float32"
        size = tf.shape(inputs)[1:3] if self.output_size is None else self.output_size
        images = _augment(tf.cast(inputs, dtype), self.params, self.seed_generator.next(), size)
        return tf.cast(images, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        if self.output_size is None:
            return input_shape
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        output_size = None if self.output_size is None else list(self.output_size)
        return {**super().get_config(), **(self.params or {}), "output_size": output_size, "seed": self.seed}
