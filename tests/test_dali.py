"""`load(..., backend="dali")`: NVIDIA DALI in CPU mode (no GPU here) on datasets made by the real conversion, held
to `load`'s contract: the same batches' shapes and dtypes, every record once per pass, close pixels, the same
augmentation geometry, sharding, record indexes, and a clear error without DALI."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from shardflow.core import metadata, record_index
from shardflow.pipeline import augment as augment_lib
from shardflow.pipeline import dali, load, steps_per_epoch
from shardflow.tools.verify import verify
from tests.test_reader import convert

SIZE = (40, 56)
# Mean absolute difference per image (0..255) allowed between the backends' JPEG decode + resize. The resize is
# the same (raw records give equal pixels, see below); the JPEG decoders differ (DALI's decodes in full,
# TensorFlow's at a reduced DCT scale when the image is twice the size asked for, with the fast integer IDCT).
# Measured on these images: 2.2-4.2 for a record against itself, >= 12 against its mirror image, >= 29 against
# any other record.
PIXEL_TOLERANCE = 6.0


@pytest.fixture(scope="module")
def pets(pets_in_shards):
    """The 60-image Kaggle sample, split train/test, three shards per split (conftest's)."""
    return str(pets_in_shards)


def arrays(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    batches = [(images.numpy(), labels.numpy()) for images, labels in dataset]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def digests(images: np.ndarray) -> collections.Counter:
    return collections.Counter(hashlib.sha256(image.tobytes()).hexdigest() for image in images)


def mean_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference of every image in `a` to every image in `b`: [len(a), len(b)]."""
    a, b = a.astype(np.float32).reshape(len(a), -1), b.astype(np.float32).reshape(len(b), -1)
    return np.abs(a[:, None] - b[None]).mean(axis=-1)


@pytest.fixture(scope="module")
def stored_order(pets):
    """The test split through DALI unshuffled, and through tf.data: (dali images, tf images, labels)."""
    dali_images, dali_labels = arrays(load(pets, "test", batch_size=8, image_size=SIZE, backend="dali"))
    tf_images, tf_labels = arrays(load(pets, "test", batch_size=8, image_size=SIZE))
    np.testing.assert_array_equal(dali_labels, tf_labels)
    return dali_images, tf_images, tf_labels


def test_batches_have_loads_shapes_and_dtypes(pets):
    by_dali = load(pets, "train", batch_size=8, image_size=SIZE, backend="dali", seed=3)
    assert by_dali.element_spec == load(pets, "train", batch_size=8, image_size=SIZE).element_spec
    assert by_dali.cardinality() == steps_per_epoch(pets, "train", 8)
    sizes = [len(labels) for _, labels in by_dali]
    train = metadata.read(pets).split("train").num_examples
    assert sizes == [8] * (train // 8) + [train % 8]  # the last batch partial, as with load
    dropped = load(pets, "train", batch_size=8, image_size=SIZE, backend="dali", drop_remainder=True)
    assert [len(labels) for _, labels in dropped] == [8] * (train // 8)


def test_pixels_are_close_to_the_tf_backends(stored_order):
    dali_images, tf_images, _ = stored_order
    differences = mean_difference(dali_images, tf_images)
    assert np.diagonal(differences).max() < PIXEL_TOLERANCE
    assert (differences.argmin(axis=1) == np.arange(len(tf_images))).all()  # each record nearest its own
    mirrored = np.abs(dali_images.astype(float) - tf_images[:, :, ::-1].astype(float)).mean(axis=(1, 2, 3))
    assert mirrored.min() > PIXEL_TOLERANCE  # the tolerance still tells geometry apart


def test_every_record_once_per_pass_shuffled(pets, stored_order):
    _, _, labels = stored_order
    reference = digests(stored_order[0])
    # 32 records in batches of 5: DALI pads every pass to 35, the padding must go, passes must not shift
    shuffled, shuffled_labels = arrays(
        load(pets, "test", batch_size=5, image_size=SIZE, backend="dali", shuffle=True, seed=5)
    )
    assert digests(shuffled) == reference and sorted(shuffled_labels) == sorted(labels)
    assert not np.array_equal(shuffled, stored_order[0])
    again, _ = arrays(load(pets, "test", batch_size=5, image_size=SIZE, backend="dali", shuffle=True, seed=5))
    np.testing.assert_array_equal(again, shuffled)  # the seed repeats the order
    steps = steps_per_epoch(pets, "test", 5)
    endless = load(pets, "test", batch_size=5, image_size=SIZE, backend="dali", shuffle=True, repeat=True)
    batches = [images.numpy() for images, _ in endless.take(3 * steps)]
    passes = [np.concatenate(batches[i * steps : (i + 1) * steps]) for i in range(3)]
    assert all(digests(images) == reference for images in passes)
    assert len({p.tobytes() for p in passes}) > 1  # reshuffled between passes


def test_two_input_pipelines_share_the_split(pets, stored_order):
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        images, _ = arrays(
            load(
                pets,
                "test",
                batch_size=10,
                image_size=SIZE,
                backend="dali",
                input_context=context,
                shuffle=True,
                seed=1,
            )
        )
        assert (
            next(iter(load(pets, "test", batch_size=10, image_size=SIZE, backend="dali", input_context=context)))[
                0
            ].shape[0]
            == 5
        )  # the per-replica batch
        seen.append(digests(images))
    assert seen[0] + seen[1] == digests(stored_order[0]) and not seen[0] & seen[1]


STRUCTURE = np.zeros((30, 44, 3), np.uint8)  # an image with structure: a gradient, a bright square, a dark bar
STRUCTURE[..., 0] = np.linspace(0, 250, 44, dtype=np.uint8)[None]
STRUCTURE[..., 1] = np.linspace(0, 200, 30, dtype=np.uint8)[:, None]
STRUCTURE[5:12, 6:15] = 255
STRUCTURE[18:26, 30:33] = 0


@pytest.mark.parametrize(
    "params, u",
    [
        ({"horizontal_flip": True}, {6: 0.2}),  # a pure flip
        ({"width_shift_range": 0.2, "height_shift_range": 4}, {1: 0.9, 2: 0.25}),  # a pure shift (fraction, pixels)
        ({"zoom_range": [0.5, 0.8]}, {4: 0.25, 5: 0.75}),
        ({"rotation_range": 40, "shear_range": 20, "fill_mode": "constant", "cval": 7}, {0: 0.8, 3: 0.1}),
    ],
)
def test_augmentation_geometry_is_augments(params, u):
    """The same draws give DALI's warp and `Augment`'s transform (TF) the same pixels, resize included."""
    params = augment_lib.parse_augment(params)
    draws = [u.get(i, 0.5) for i in range(augment_lib.DRAWS)]
    size = (24, 36)
    modules = dali.import_dali()

    @modules.pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def warp():
        images = modules.fn.external_source(source=lambda: [STRUCTURE], batch=True, layout="HWC")
        constants = [modules.fn.constant(fdata=d, shape=[]) for d in draws]
        return dali.resample(modules, images, size, 3, params, draws=constants)

    pipe = warp()
    pipe.build()
    (by_dali,) = pipe.run()
    by_dali = np.array(by_dali.as_tensor())[0].astype(float)
    geometry, _ = augment_lib.random_geometry(params, [tf.constant([d]) for d in draws], size)
    transforms = augment_lib.affine_transforms(STRUCTURE.shape[:2], size, **geometry)
    by_tf = augment_lib.transform_images(
        tf.cast(STRUCTURE, tf.float32)[None], transforms, size, params["fill_mode"], params["cval"]
    )
    by_tf = np.round(by_tf[0].numpy())
    plain = augment_lib.augment_and_resize(STRUCTURE, size, None).numpy().astype(float)
    assert np.abs(by_dali - plain).mean() > 10  # the augmentation moved pixels
    assert np.abs(by_dali - by_tf).max() <= 1  # equal here; 1 allows other float rounding (a GPU's)


def test_augment_through_load(pets, stored_order):
    """Random horizontal flips mirror some images and leave the others as they were; a fixed brightness scales."""
    flipped, _ = arrays(
        load(pets, "test", batch_size=8, image_size=SIZE, backend="dali", augment={"horizontal_flip": True})
    )
    plain = stored_order[0].astype(int)
    same = np.abs(flipped - plain).max(axis=(1, 2, 3)) <= 1
    mirrored = np.abs(flipped - plain[:, :, ::-1]).max(axis=(1, 2, 3)) <= 1
    assert (same | mirrored).all() and same.any() and mirrored.any()
    dimmed, _ = arrays(
        load(pets, "test", batch_size=8, image_size=SIZE, backend="dali", augment={"brightness_range": [0.5, 0.5]})
    )
    assert np.abs(dimmed - plain * 0.5).max() <= 1


def test_unsupported_options_are_refused(pets):
    for options, words in [
        ({"cache": True}, "cache"),
        ({"take": 3}, "take"),
        ({"augment": {"fill_mode": "reflect"}}, "fill_mode"),
        ({"backend": "torch"}, "backend"),
    ]:
        with pytest.raises(ValueError, match=words):
            load(pets, "test", batch_size=8, image_size=SIZE, **{"backend": "dali", **options})


@pytest.fixture(scope="module")
def fixed(kaggle_dir, tmp_path_factory):
    """Raw pixels at one size: no JPEG decoder in the way, so the backends' pixels can be compared exactly."""
    return str(
        convert(
            kaggle_dir,
            tmp_path_factory.mktemp("dali-fixed") / "fixed",
            "--size",
            "32x48",
            "--image-format",
            "raw",
            "--splits",
            "train=0.5,test=0.5",
        )
    )


@pytest.mark.parametrize("size, crop", [((24, 40), False), ((50, 20), True)])
def test_raw_pixels_equal_the_tf_backends(fixed, size, crop):
    """The resize (stretched, or centre-cropped first: here upscaled, so the crop's edges matter) is `load`'s, up
    to rounding."""
    by_dali, _ = arrays(load(fixed, "test", batch_size=8, image_size=size, crop_to_aspect_ratio=crop, backend="dali"))
    by_tf, _ = arrays(load(fixed, "test", batch_size=8, image_size=size, crop_to_aspect_ratio=crop))
    assert np.abs(by_dali.astype(int) - by_tf).max() <= 1


def test_stored_size_and_its_error(fixed, pets):
    images, _ = next(iter(load(fixed, "test", batch_size=4, image_size=None, backend="dali")))
    assert images.shape == (4, 32, 48, 3)
    np.testing.assert_array_equal(images, next(iter(load(fixed, "test", batch_size=4, image_size=None)))[0])
    with pytest.raises(metadata.DatasetError) as by_tf:
        load(pets, "test", batch_size=4, image_size=None)
    with pytest.raises(metadata.DatasetError) as by_dali:
        load(pets, "test", batch_size=4, image_size=None, backend="dali")
    assert str(by_dali.value) == str(by_tf.value)


def test_conversion_writes_record_indexes_that_verify_checks_and_tfds_ignores(pets):
    info = metadata.read(pets)
    for split in info.splits.values():
        for shard, path in zip(split.shards, info.shard_paths(split.name)):
            lines = [list(map(int, line.split())) for line in open(record_index.index_path(path))]
            assert len(lines) == shard.num_records and lines[0][0] == 0
            assert lines[-1][0] + lines[-1][1] == shard.num_bytes
            assert all(a[0] + a[1] == b[0] for a, b in zip(lines, lines[1:]))
            assert open(record_index.index_path(path)).read() == record_index.scan(path)
    assert verify(pets).ok
    builder = tfds.builder_from_directory(pets)
    assert len(list(builder.as_dataset(split="test"))) == info.split("test").num_examples


def test_indexes_are_built_on_first_use(pets, stored_order, tmp_path):
    """A dataset converted without indexes (elsewhere, or before them) gets them in its `dali-index/` folder; an
    index that does not fit its shard is rebuilt."""
    bare = tmp_path / "bare"
    shutil.copytree(pets, bare, ignore=shutil.ignore_patterns(record_index.FOLDER))
    paths = metadata.read(str(bare)).shard_paths("test")
    (bare / record_index.FOLDER).mkdir()
    with open(record_index.index_path(paths[0]), "w") as stale:
        stale.write("0 100\n")
    images, _ = arrays(load(str(bare), "test", batch_size=8, image_size=SIZE, backend="dali"))
    np.testing.assert_array_equal(images, stored_order[0])
    for path in paths:
        assert (
            open(record_index.index_path(path)).read()
            == open(record_index.index_path(path.replace(str(bare), pets))).read()
        )


@contextlib.contextmanager
def read_only(folder: pathlib.Path) -> Iterator[pathlib.Path]:
    """`folder` as a reader without write permission sees it: made read-only (chmod) for an ordinary user; for root,
    who may write anyway, a read-only bind mount of it (skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
        for path, mode in modes.items():
            path.chmod(mode & ~0o222)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    view = folder.parent / f"{folder.name}-read-only"
    view.mkdir()
    for command in (["mount", "--bind", str(folder), str(view)], ["mount", "-o", "remount,ro,bind", str(view)]):
        made = subprocess.run(command, capture_output=True, text=True)
        if made.returncode:
            subprocess.run(["umount", str(view)], capture_output=True)
            pytest.skip(f"cannot make a read-only view of a folder here: {made.stderr.strip()}")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_read_only_dataset_gets_its_indexes_in_the_users_cache(pets, stored_order, tmp_path, monkeypatch):
    """A dataset without indexes in a folder the reader cannot write to: they are built once, named by their shard's
    SHA-256, in ~/.cache/shardflow/record-index ($XDG_CACHE_HOME), and found there the next time."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bare = tmp_path / "bare"
    shutil.copytree(pets, bare, ignore=shutil.ignore_patterns(record_index.FOLDER))
    info = metadata.read(str(bare))
    cache = tmp_path / "cache" / "shardflow" / "record-index"
    with read_only(bare) as view:
        with pytest.raises(OSError):
            (view / "probe").write_text("")  # (the reader cannot write there)
        images, _ = arrays(load(str(view), "test", batch_size=8, image_size=SIZE, backend="dali"))
        np.testing.assert_array_equal(images, stored_order[0])
        assert not (view / record_index.FOLDER).exists()
        cached = {path.name: path.read_text() for path in cache.iterdir()}
        assert cached == {
            shard.sha256 + record_index.SUFFIX: record_index.scan(path)
            for shard, path in zip(info.split("test").shards, info.shard_paths("test"))
        }
        built = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
        arrays(load(str(view), "test", batch_size=8, image_size=SIZE, backend="dali"))
        assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == built  # used, not rebuilt


def test_an_index_with_a_flipped_byte_is_rebuilt(pets, tmp_path):
    """An index whose lines do not follow on from each other (a digit flipped: one record's size, or the next one's
    offset) does not fit, though its line count and end do."""
    copy = tmp_path / "copy"
    shutil.copytree(pets, copy)
    info = metadata.read(str(copy))
    shard, path = info.split("test").shards[0], info.shard_paths("test")[0]
    index = record_index.index_path(path)
    good = open(index, "rb").read()
    at = good.index(b"\n") - 1  # the last digit of the first record's size
    open(index, "wb").write(good[:at] + bytes([good[at] ^ 0x01]) + good[at + 1 :])
    assert record_index.index_for(path, shard) == index and open(index, "rb").read() == good


def test_a_dataset_with_old_index_names_loads_and_they_leave_the_shard_glob(pets, stored_order, tmp_path, monkeypatch):
    """Datasets converted before the `dali-index/` folder kept each index beside its shard as `dali-index.SHARD`,
    which `*.tfrecord*` matches: verify notes them, DALI reads them and moves them into the folder; one that does
    not fit its shard is named by verify, and replaced."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    old = tmp_path / "old"
    shutil.copytree(pets, old, ignore=shutil.ignore_patterns(record_index.FOLDER))
    paths = metadata.read(str(old)).shard_paths("test")
    legacy = [old / record_index.legacy_filename(os.path.basename(path)) for path in paths]
    for path, name in zip(paths, legacy):
        shutil.copyfile(record_index.index_path(path.replace(str(old), pets)), name)
    legacy[1].write_text("0 100\n")
    report = verify(str(old))
    assert [(shard.old_index, len(shard.problems)) for shard in report.shards if shard.split == "test"] == [
        (False, 1) if i == 1 else (True, 0) for i in range(len(paths))
    ]
    assert legacy[1].name in next(shard for shard in report.shards if shard.problems).problems[0]
    assert report.notes[0].startswith(f"{len(paths) - 1} record index(es) under their old name")
    images, _ = arrays(load(str(old), "test", batch_size=8, image_size=SIZE, backend="dali"))
    np.testing.assert_array_equal(images, stored_order[0])
    for path in paths:
        assert open(record_index.index_path(path)).read() == record_index.scan(path)
    assert not any(name.exists() for name in legacy)
    assert not (tmp_path / "cache").exists()
    assert verify(str(old)).ok


def test_without_dali_the_error_names_the_packages(pets, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # what Python does for a package it cannot import
    with pytest.raises(ImportError) as error:
        load(pets, "test", batch_size=8, image_size=16, backend="dali")
    assert all(package in str(error.value) for package in dali.PACKAGES)
    assert "--no-build-isolation" in str(error.value)


def test_a_keras_model_trains_on_it(pets):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((*SIZE, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(
        load(pets, "train", batch_size=8, image_size=SIZE, backend="dali", augment="seed004"), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
