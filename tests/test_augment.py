"""Augment / Resize / Normalize: ImageDataGenerator parity, the fused resize, the Keras layers, and GPU kernel
coverage."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import kernels
from tf_keras.preprocessing.image import apply_affine_transform

from shardflow.pipeline.augment import (
    PRESETS,
    Augment,
    affine_transforms,
    augment_and_resize,
    augment_batch,
    parse_augment,
    transform_images,
)
from shardflow.pipeline.normalize import NORMALIZE_MODES, Normalize
from shardflow.pipeline.resize import Resize

APPLICATION_MODES = [mode for mode in NORMALIZE_MODES if mode not in ("rescale", "symmetric", "standardize")]


def pattern(size: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A square image with no symmetry: noise over a diagonal ramp, float32 in 0..255."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(size), 2 * np.arange(size))[..., None] * (200 / (3 * size))
    return (ramp + rng.uniform(0, 55, (size, size, channels))).astype(np.float32)


def transformed(image: np.ndarray, fill_mode: str = "nearest", cval: float = 0.0, **kwargs) -> np.ndarray:
    """Our resampling of one image with apply_affine_transform's parameters."""
    size = image.shape[:2]
    transforms = affine_transforms(size, size, **kwargs)
    return transform_images(tf.constant(image)[None], transforms, size, fill_mode, cval)[0].numpy()


def reference(image: np.ndarray, fill_mode: str = "nearest", cval: float = 0.0, **kwargs) -> np.ndarray:
    """tf_keras ImageDataGenerator's own transform (scipy, bilinear), channels last."""
    return apply_affine_transform(
        image, row_axis=0, col_axis=1, channel_axis=2, fill_mode=fill_mode, cval=cval, order=1, **kwargs
    )


# parse_augment


def test_parse_augment_reads_presets_json_and_dicts():
    assert parse_augment(None) is None and parse_augment("none") is None and parse_augment("None") is None
    preset = parse_augment("seed004")
    assert preset == parse_augment(json.dumps(PRESETS["seed004"])) == parse_augment(dict(PRESETS["seed004"]))
    assert preset["zoom_range"] == pytest.approx([0.8, 1.2]) and preset["rotation_range"] == 40
    assert preset["horizontal_flip"] and not preset["vertical_flip"] and preset["fill_mode"] == "nearest"
    params = parse_augment('{"zoom_range": [0.5, 2], "brightness_range": [0.8, 1.1], "cval": 3}')
    assert params["zoom_range"] == [0.5, 2.0] and params["brightness_range"] == [0.8, 1.1] and params["cval"] == 3.0
    assert parse_augment({})["rotation_range"] == 0.0  # nothing asked: every argument at its default


@pytest.mark.parametrize(
    "text, named",
    [
        ("seed005", "seed005"),
        ('{"rotation": 40}', "'rotation'"),
        ("[1, 2]", "JSON object"),
        ({"rotation_range": -1}, "rotation_range=-1"),
        ({"width_shift_range": "0.2"}, "width_shift_range='0.2'"),
        ({"zoom_range": 1.5}, "zoom_range=1.5"),
        ({"zoom_range": [1.2, 0.8]}, "zoom_range=[1.2, 0.8]"),
        ({"brightness_range": [0.5]}, "brightness_range=[0.5]"),
        ({"horizontal_flip": 1}, "horizontal_flip=1"),
        ({"fill_mode": "mirror"}, "fill_mode='mirror'"),
        ({"cval": float("nan")}, "cval=nan"),
    ],
)
def test_parse_augment_names_the_bad_key_or_value(text, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_augment(text)


# The transform, against ImageDataGenerator


def test_zero_augmentation_is_the_identity():
    images = np.random.default_rng(1).integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)
    out = augment_batch(images, parse_augment({"zoom_range": 0.0}), tf.constant([1, 2]))
    assert out.dtype == tf.uint8
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(Augment(seed=0)(images, training=True), images.astype(np.float32))


def test_forced_flips_mirror_exactly():
    image = pattern(12)
    np.testing.assert_array_equal(transformed(image, flip_horizontal=True), image[:, ::-1])
    np.testing.assert_array_equal(transformed(image, flip_vertical=True), image[::-1])


def test_horizontal_flip_flips_about_half_the_images_each_exactly():
    images = np.random.default_rng(2).integers(0, 256, (64, 8, 10, 3), dtype=np.uint8)
    out = augment_batch(images, parse_augment({"horizontal_flip": True}), tf.constant([3, 4])).numpy()
    flipped = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)])
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, images)])
    assert np.all(flipped ^ kept) and 10 < flipped.sum() < 54


def test_rotation_by_90_degrees_turns_the_way_image_data_generator_does():
    image = pattern(16)
    np.testing.assert_allclose(reference(image, theta=90), np.rot90(image), atol=1e-3)  # counterclockwise
    np.testing.assert_allclose(transformed(image, theta=90), np.rot90(image), atol=1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tx": 3.0},
        {"ty": -2.5},
        {"zx": 0.8, "zy": 1.25},
        {"shear": 20.0},
        {"theta": 25.0},
        {"theta": -40.0, "tx": 2.2, "ty": 1.5, "shear": 11.0, "zx": 0.85, "zy": 1.15},
    ],
)
@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "constant"])
def test_transforms_match_apply_affine_transform(kwargs, fill_mode):
    """Same parameters, same pixels: the tutorials' settings port one to one. Bilinear with "constant" differs
    from scipy within a pixel of the border (TF blends the fill value in), so compare the interior there."""
    image = pattern(24)
    ours, theirs = transformed(image, fill_mode, 50.0, **kwargs), reference(image, fill_mode, 50.0, **kwargs)
    if fill_mode == "constant":
        inside = reference(np.ones_like(image), "constant", 0.0, **kwargs) == 1  # sampled from inside in scipy
        ours, theirs = ours[inside], theirs[inside]
        assert inside.mean() > 0.5
    np.testing.assert_allclose(ours, theirs, atol=1e-2)


def test_shift_ranges_shift_along_their_own_axis_by_at_most_the_range():
    columns = np.tile(np.arange(40, dtype=np.float32) * 5, (30, 1))[None, ..., None]  # varies along x only
    seed = tf.constant([5, 6])
    vertical = augment_batch(np.repeat(columns, 8, 0), parse_augment({"height_shift_range": 0.3}), seed).numpy()
    np.testing.assert_allclose(vertical, np.repeat(columns, 8, 0), atol=1e-3)
    for limit, pixels in ((0.1, 4.0), (3, 3.0)):  # a fraction of the width, or pixels
        moved = augment_batch(np.repeat(columns, 32, 0), parse_augment({"width_shift_range": limit}), seed).numpy()
        shifts = moved[:, 15, 20, 0] / 5 - 20
        assert np.abs(shifts).max() <= pixels + 1e-3 and np.abs(shifts).max() > pixels / 2


def test_brightness_multiplies_and_channel_shift_offsets_each_channel():
    images = np.full((4, 6, 6, 3), 100.0, np.float32)
    half = augment_batch(images, parse_augment({"brightness_range": [0.5, 0.5]}), tf.constant([0, 1]))
    np.testing.assert_allclose(half, 50.0, atol=1e-4)
    shifted = augment_batch(images, parse_augment({"channel_shift_range": 30}), tf.constant([0, 1])).numpy()
    offsets = shifted[:, 0, 0, :] - 100
    np.testing.assert_allclose(shifted, np.broadcast_to(offsets[:, None, None, :] + 100, shifted.shape), atol=1e-4)
    assert np.abs(offsets).max() <= 30 and np.ptp(offsets, axis=1).min() > 0  # channels shift independently
    bright = augment_batch(images + 100, parse_augment({"brightness_range": [2, 2]}), tf.constant([0, 1]))
    np.testing.assert_allclose(bright, 255.0)  # clipped to the pixel range


# augment_and_resize: the fused CPU path


@pytest.mark.parametrize("size", [(9, 13), (50, 41)])
def test_augment_and_resize_without_params_is_a_bilinear_resize(size):
    image = np.random.default_rng(3).uniform(0, 255, (24, 30, 3)).astype(np.float32)
    ours = augment_and_resize(tf.constant(image), size, None)
    assert ours.dtype == tf.float32
    np.testing.assert_allclose(ours, tf.image.resize(image, size, "bilinear"), atol=1e-3)
    as_uint8 = augment_and_resize(tf.constant(image.astype(np.uint8)), size, None)
    expected = tf.image.resize(image.astype(np.uint8), size, "bilinear").numpy()
    assert as_uint8.dtype == tf.uint8 and np.abs(as_uint8.numpy() - expected).max() <= 0.5 + 1e-3


def test_augment_and_resize_in_a_dataset_of_mixed_sizes():
    sizes = [(40, 60), (17, 23), (64, 64), (31, 90)]
    rng = np.random.default_rng(4)
    dataset = tf.data.Dataset.from_generator(
        lambda: (rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in sizes),
        output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    ).cache()
    params = parse_augment("seed004")
    keyed = dataset.enumerate().map(
        lambda i, image: augment_and_resize(image, (24, 32), params, tf.stack([i, tf.constant(7, tf.int64)]))
    )
    first, second = list(keyed.as_numpy_iterator()), list(keyed.as_numpy_iterator())
    assert [(o.shape, o.dtype) for o in first] == [((24, 32, 3), np.uint8)] * len(sizes)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))  # same keys, same augmentation
    plain = dataset.map(lambda image: augment_and_resize(image, (24, 32), None))
    assert not any(np.array_equal(a, b) for a, b in zip(first, plain.as_numpy_iterator()))


# The Keras layers


def test_augment_layer_is_active_only_in_training():
    images = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    layer = Augment(**PRESETS["seed004"], seed=3)
    for out in (layer(images), layer(images, training=False)):
        assert out.dtype == tf.float32
        np.testing.assert_array_equal(out, images.astype(np.float32))
    first, second = layer(images, training=True).numpy(), layer(images, training=True).numpy()
    assert first.dtype == np.float32 and first.shape == images.shape
    assert not np.allclose(first, images) and not np.allclose(first, second)  # a new draw every call
    assert 0 <= first.min() and first.max() <= 255


def test_augment_layer_computes_in_float16_under_mixed_precision(mixed_precision):
    images = np.random.default_rng(6).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    augment, normalize = Augment(rotation_range=30, brightness_range=[0.9, 1.1], seed=1), Normalize("symmetric")
    assert normalize(augment(images, training=True)).dtype == augment(images).dtype == tf.float16


def test_resize_layer_rounds_like_the_pipeline_and_augment_resizes_outside_training():
    images = np.random.default_rng(9).integers(0, 256, (3, 37, 53, 3), dtype=np.uint8)
    pipeline = np.clip(np.round(tf.image.resize(images, (24, 32)).numpy()), 0, 255).astype(np.uint8)  # as `load`
    resized = Resize((24, 32))(images)
    assert resized.dtype == tf.float32 and resized.shape == (3, 24, 32, 3)
    np.testing.assert_array_equal(resized.numpy(), pipeline.astype(np.float32))
    augment = Augment(**PRESETS["seed004"], output_size=(24, 32), seed=1)
    np.testing.assert_array_equal(augment(images).numpy(), resized.numpy())
    augmented = augment(images, training=True).numpy()
    assert augmented.shape == (3, 24, 32, 3) and not np.allclose(augmented, resized)
    assert augment.compute_output_shape((None, 37, 53, 3)) == (None, 24, 32, 3)


def test_augment_with_output_size_resamples_once_to_that_size():
    """With no random part, the fused resampling is the bilinear resize itself (up to the pipeline's rounding)."""
    images = np.random.default_rng(10).integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
    fused = Augment(output_size=(20, 45))(images, training=True).numpy()
    np.testing.assert_allclose(fused, Resize((20, 45))(images).numpy(), atol=0.5 + 1e-3)


def test_layer_configs_round_trip():
    layer = Augment(
        rotation_range=10, zoom_range=[0.9, 1.3], brightness_range=[0.5, 1.5], fill_mode="reflect", seed=7, name="aug"
    )
    clone = keras.layers.deserialize(json.loads(json.dumps(keras.layers.serialize(layer))))
    assert isinstance(clone, Augment) and clone.get_config() == layer.get_config()
    assert clone.params["zoom_range"] == [0.9, 1.3] and clone.seed == 7
    sized = Augment(zoom_range=0.1, output_size=(30, 40))
    assert Augment.from_config(json.loads(json.dumps(sized.get_config()))).output_size == (30, 40)
    assert Resize.from_config(json.loads(json.dumps(Resize(24).get_config()))).output_size == (24, 24)
    normalize = Normalize("standardize", mean=[120.0, 110.0, 100.0], std=[60.0, 55.0, 50.0])
    assert Normalize.from_config(normalize.get_config()).get_config() == normalize.get_config()


@pytest.mark.parametrize(
    "first",
    [
        lambda: Augment(**PRESETS["seed004"]),
        lambda: Resize((24, 20)),
        lambda: Augment(**PRESETS["seed004"], output_size=(24, 20)),
    ],
)
def test_a_saved_model_with_the_layers_reloads(tmp_path, first):
    model = keras.Sequential(
        [
            keras.Input((32, 40, 3), dtype="uint8"),
            first(),
            Normalize("symmetric"),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1),
        ]
    )
    images = np.random.default_rng(7).integers(0, 256, (4, 32, 40, 3), dtype=np.uint8)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0), model.predict(images, verbose=0))
    assert reloaded.layers[0].get_config() == model.layers[0].get_config()


@pytest.mark.parametrize("mode", APPLICATION_MODES)
def test_normalize_matches_keras_applications_preprocess_input(mode):
    module = {
        "resnet101": "resnet",
        "resnet152": "resnet",
        "resnet50_v2": "resnet_v2",
        "nasnet_mobile": "nasnet",
        "mobilenet_v3_small": "mobilenet_v3",
        "mobilenet_v3_large": "mobilenet_v3",
        "convnext_tiny": "convnext",
    }.get(mode, mode)
    module = "densenet" if module.startswith("densenet") else module
    module = "efficientnet" if module.startswith("efficientnet_b") else module
    preprocess_input = getattr(keras.applications, module).preprocess_input
    images = np.random.default_rng(8).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    expected = preprocess_input(images.copy())
    np.testing.assert_allclose(Normalize(mode)(images), expected, atol=1e-4)
    np.testing.assert_allclose(
        Normalize(mode)(images.astype(np.uint8)),
        preprocess_input(images.astype(np.uint8).astype(np.float32)),
        atol=1e-4,
    )


def test_normalize_generic_modes_and_errors():
    pixels = np.array([[[[0, 51, 255]]]], np.uint8)
    np.testing.assert_allclose(Normalize("rescale")(pixels), [[[[0, 0.2, 1]]]], atol=1e-6)
    np.testing.assert_allclose(Normalize("symmetric")(pixels), [[[[-1, -0.6, 1]]]], atol=1e-6)
    standardized = Normalize("standardize", mean=[0, 50, 255], std=[1, 2, 5])(pixels)
    np.testing.assert_allclose(standardized, [[[[0, 0.5, 0]]]], atol=1e-6)
    with pytest.raises(ValueError, match="'vgg'"):
        Normalize("vgg")
    with pytest.raises(ValueError, match="mean= and std="):
        Normalize("standardize", mean=[1, 2, 3])
    with pytest.raises(ValueError, match="needs 3 channels"):
        Normalize("vgg16")(np.zeros((1, 4, 4, 1), np.uint8))


# GPU kernel coverage: every op the layers put in a graph has a GPU kernel for its dtypes


def gpu_misses(graph_def: tf.compat.v1.GraphDef) -> set[str]:
    """Ops (with their type attributes) that no GPU kernel accepts. Kernels registered for DEVICE_DEFAULT serve
    every device, the GPU included (ReadVariableOp, Placeholder, NoOp are registered that way); every op in these
    graphs has some kernel, so no op type needs excusing."""
    nodes = [*graph_def.node, *(node for function in graph_def.library.function for node in function.node_def)]
    misses = set()
    for node in nodes:
        candidates = [
            k for k in kernels.get_registered_kernels_for_op(node.op).kernel if k.device_type in ("GPU", "DEFAULT")
        ]
        if not any(all(_allows(node, constraint) for constraint in k.constraint) for k in candidates):
            types = {name: tf.as_dtype(value.type).name for name, value in node.attr.items() if value.type}
            misses.add(f"{node.op}{types}")
    return misses


def _allows(node, constraint) -> bool:
    value = node.attr[constraint.name]
    types = list(value.list.type) if value.HasField("list") else [value.type]
    return all(t in constraint.allowed_values.list.type for t in types)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize("output_size", [None, (24, 40)])
def test_augment_and_normalize_have_gpu_kernels(policy, output_size, request):
    if policy == "mixed_float16":
        request.getfixturevalue("mixed_precision")
    augment = Augment(
        **PRESETS["seed004"],
        brightness_range=[0.8, 1.2],
        channel_shift_range=20,
        vertical_flip=True,
        output_size=output_size,
        seed=0,
    )
    for mode in ("symmetric", "vgg16", "densenet121", "efficientnet_b0"):
        normalize = Normalize(mode)
        graph = (
            tf.function(lambda x: normalize(augment(x, training=True)))  # noqa: B023 (traced here, in the loop)
            .get_concrete_function(tf.TensorSpec([None, 32, 32, 3], tf.uint8))
            .graph
        )
        resampled = {
            node.attr["dtype"].type for node in graph.as_graph_def().node if node.op == "ImageProjectiveTransformV3"
        }
        assert resampled == {tf.float16 if policy == "mixed_float16" else tf.float32}
        assert "StatelessRandomUniformV2" in {node.op for node in graph.as_graph_def().node}
        assert gpu_misses(graph.as_graph_def()) == set(), mode
        inference = (
            tf.function(lambda x: normalize(augment(x, training=False)))  # noqa: B023 (traced here, in the loop)
            .get_concrete_function(tf.TensorSpec([None, 32, 32, 3], tf.uint8))
            .graph
        )
        assert gpu_misses(inference.as_graph_def()) == set(), mode


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_resize_has_gpu_kernels(policy, request):
    if policy == "mixed_float16":
        request.getfixturevalue("mixed_precision")
    resize, normalize = Resize((24, 40)), Normalize("symmetric")
    graph = (
        tf.function(lambda x: normalize(resize(x)))
        .get_concrete_function(tf.TensorSpec([None, 32, 32, 3], tf.uint8))
        .graph
    )
    assert "ResizeBilinear" in {node.op for node in graph.as_graph_def().node}
    assert gpu_misses(graph.as_graph_def()) == set()


def test_the_gpu_kernel_check_flags_cpu_only_ops():
    @tf.function
    def cpu_only(text, images):
        transforms = affine_transforms((8, 8), (8, 8), theta=10.0)
        return tf.strings.length(text), tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=[8, 8], fill_value=0.0, interpolation="BILINEAR"
        )

    graph = cpu_only.get_concrete_function(tf.TensorSpec([], tf.string), tf.TensorSpec([1, 8, 8, 1], tf.bfloat16)).graph
    assert gpu_misses(graph.as_graph_def()) == {
        "StringLength{}",  # a CPU-only op
        "ImageProjectiveTransformV3{'dtype': 'bfloat16'}",
    }  # a CPU-only dtype
