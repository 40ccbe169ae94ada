"""`shardflow.pipeline.load`: batches, formats, decoding, order, options and errors, on converted datasets."""

from __future__ import annotations

import glob
import hashlib
import pathlib
import shutil
import struct

import google_crc32c
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from shardflow.cli import main
from shardflow.core import metadata
from shardflow.core.decoder import dct_ratio, usable_ratios
from shardflow.pipeline import load, steps_per_epoch
from tests.conftest import encode, write_idx


def convert(src, out, *flags):
    assert main(["convert", str(src), str(out), "--workers", "1", *map(str, flags)]) == 0
    return out


@pytest.fixture(scope="module")
def pets(pets_in_shards):
    """The 60-image Kaggle sample, passthrough, split train/test, several shards per split (conftest's)."""
    return pets_in_shards


def all_batches(dataset):
    return [(images.numpy(), labels.numpy()) for images, labels in dataset]


def test_batches_are_uint8_with_labels(pets):
    meta = metadata.read(str(pets))
    batches = all_batches(load(str(pets), "train", batch_size=8, image_size=(48, 64)))
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.uint8 and images.shape[1:] == (48, 64, 3)
    assert len(images) == meta.splits["train"].num_examples == sum(meta.splits["train"].label_counts.values())
    assert sorted(np.bincount(labels).tolist()) == sorted(meta.splits["train"].label_counts.values())
    assert len(batches) == steps_per_epoch(str(pets), "train", 8)


def test_pixels_match_a_full_decode_and_resize(kaggle_dir, pets):
    """At a size needing the full decode, pixels equal decode + bilinear resize; smaller sizes stay close."""
    source = {}
    for path in kaggle_dir.glob("*.jpg"):
        source[path.name] = tf.io.decode_jpeg(path.read_bytes(), dct_method="INTEGER_FAST")
    dataset = load(str(pets), "test", batch_size=64, image_size=600, shuffle=False)
    images, _ = next(iter(dataset))
    stored_order = meta_filenames(pets, "test")  # shuffle=False keeps the stored order
    expected = tf.cast(tf.round(tf.image.resize(source[stored_order[0]], (600, 600))), tf.uint8).numpy()
    np.testing.assert_allclose(images[0].numpy(), expected, atol=1)
    small, _ = next(iter(load(str(pets), "test", batch_size=64, image_size=64, shuffle=False)))
    reference = tf.image.resize(source[stored_order[0]], (64, 64), antialias=True).numpy()
    assert np.abs(small[0].numpy().astype(float) - reference).mean() < 12


def meta_filenames(out, split):
    meta = metadata.read(str(out))
    names = []
    for serialized in tf.data.TFRecordDataset(meta.shard_paths(split)):
        example = tf.train.Example.FromString(serialized.numpy())
        names.append(example.features.feature["image/filename"].bytes_list.value[0].decode())
    return names


def test_dct_ratio_picks_the_cheapest_scale_that_covers_the_target():
    assert int(dct_ratio(tf.constant(375), tf.constant(500), (150, 150))) == 1  # 1/2 scale: 188x250
    assert int(dct_ratio(tf.constant(375), tf.constant(500), (40, 40))) == 3  # 1/8 scale: 47x63
    assert int(dct_ratio(tf.constant(100), tf.constant(500), (150, 150))) == 0  # upscaling: full decode
    # stored with --max-side 160, no image can be halved and still cover 150x150: no choice to make per image
    assert usable_ratios((150, 150), 160) == (1,) and usable_ratios((40, 40), 160) == (1, 2, 4)
    assert usable_ratios((150, 150), None) == (1, 2, 4, 8)


@pytest.mark.parametrize("fmt", ["png", "raw", "jpeg"])
def test_every_stored_format_reads(kaggle_dir, tmp_path, fmt):
    out = convert(kaggle_dir, tmp_path / fmt, "--image-format", fmt, "--max-side", "80", "--splits", "train=1")
    images, labels = next(iter(load(str(out), "train", batch_size=60, image_size=32)))
    assert images.shape == (60, 32, 32, 3) and images.dtype == tf.uint8 and set(labels.numpy()) == {0, 1}


def test_one_channel_idx(tmp_path):
    (tmp_path / "mnist").mkdir()
    digits = np.zeros((20, 28, 28), np.uint8)
    digits[:, 10:18, 10:18] = 255
    write_idx(tmp_path / "mnist", "train", digits, np.arange(20) % 10, gz=True)
    write_idx(tmp_path / "mnist", "t10k", digits[:4], np.arange(4), gz=True)
    out = convert(tmp_path / "mnist", tmp_path / "out")
    images, labels = next(iter(load(str(out), "train", batch_size=20, image_size=28, shuffle=False)))
    assert images.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(images.numpy()[..., 0], digits)
    assert sorted(labels.numpy().tolist()) == sorted((np.arange(20) % 10).tolist())


def digests(batches) -> list[str]:
    """One SHA-1 per image of `all_batches`' batches, in order."""
    return [hashlib.sha1(image.tobytes()).hexdigest() for images, _ in batches for image in images]


def test_seed_gives_repeatable_batches_of_shuffled_train(pets):
    def batches(seed):
        return all_batches(load(str(pets), "train", batch_size=4, image_size=16, seed=seed))

    first, again, other = batches(7), batches(7), batches(8)
    stored = digests(all_batches(load(str(pets), "train", batch_size=4, image_size=16, shuffle=False)))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in first]), np.concatenate([b[0] for b in again]))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in first]), np.concatenate([b[1] for b in again]))
    # train is shuffled: neither seed gives the stored order, nor the other seed's; all give the same images
    assert digests(first) != stored and digests(other) != stored and digests(first) != digests(other)
    assert sorted(digests(first)) == sorted(digests(other)) == sorted(stored)


def test_shards_and_records_are_shuffled(pets, fixed):
    """Shard order is shuffled (the first record of a pass is the first of any shard when records are not), and
    records go through a shuffle buffer (a one-shard split's order changes too)."""
    info = metadata.read(str(pets))
    stored = digests(all_batches(load(str(pets), "train", batch_size=8, image_size=16, shuffle=False)))
    starts = np.cumsum([0] + [shard.num_records for shard in info.splits["train"].shards[:-1]])
    shard_firsts = {stored[start] for start in starts}
    firsts = {
        digests(all_batches(load(str(pets), "train", batch_size=8, image_size=16, seed=seed, shuffle_buffer=1)))[0]
        for seed in range(6)
    }
    assert firsts <= shard_firsts and len(firsts) > 1, (firsts, shard_firsts)
    (shard,) = metadata.read(str(fixed)).splits["train"].shards
    one_shard = digests(all_batches(load(str(fixed), "train", batch_size=8, image_size=None, shuffle=False)))
    shuffled = digests(all_batches(load(str(fixed), "train", batch_size=8, image_size=None, seed=1)))
    assert shuffled != one_shard and sorted(shuffled) == sorted(one_shard) and len(one_shard) == shard.num_records


def test_repeat_and_take(pets):
    train = metadata.read(str(pets)).splits["train"].num_examples
    repeated = load(str(pets), "train", batch_size=5, image_size=16, repeat=True).take(20)
    assert sum(len(b[1]) for b in all_batches(repeated)) == 100 > train
    assert sum(len(b[1]) for b in all_batches(load(str(pets), "train", batch_size=4, image_size=16, take=9))) == 9


@pytest.mark.parametrize("in_files", [False, True])
def test_cache_serves_later_passes_without_the_shards(pets, tmp_path, in_files):
    """After one pass, the decoded images come from the cache (memory, or files at the given prefix): a second pass
    needs no shard; augmentation applied after the cache still varies from pass to pass."""
    copy = tmp_path / "pets"
    shutil.copytree(pets, copy)
    cache = str(tmp_path / "cache" / "test") if in_files else True
    if in_files:
        (tmp_path / "cache").mkdir()
    cached = load(str(copy), "test", batch_size=8, image_size=16, cache=cache, shuffle=False)
    augmented = load(
        str(copy),
        "test",
        batch_size=8,
        image_size=16,
        cache=cache + "-augmented" if in_files else True,
        shuffle=False,
        augment="seed004",
    )
    first, first_augmented = all_batches(cached), all_batches(augmented)
    if in_files:
        assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("test.")) == [
            "test.data-00000-of-00001",
            "test.index",
        ]
    for path in metadata.read(str(copy)).shard_paths("test"):
        pathlib.Path(path).unlink()
    second, second_augmented = all_batches(cached), all_batches(augmented)
    assert digests(second) == digests(first) and len(first) == steps_per_epoch(str(pets), "test", 8)
    assert sorted(digests(second_augmented)) != sorted(digests(first_augmented))


def test_input_context_gives_each_pipeline_its_own_records(pets):
    meta = metadata.read(str(pets))
    assert len(meta.splits["train"].shards) >= 2
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        dataset = load(str(pets), "train", batch_size=8, image_size=16, input_context=context)
        seen.append(digests(all_batches(dataset)))
        assert next(iter(dataset))[0].shape[0] <= 4  # per-replica batch
    whole = digests(all_batches(load(str(pets), "train", batch_size=8, image_size=16, shuffle=False)))
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])  # no record read by both pipelines
    assert sorted(seen[0] + seen[1]) == sorted(whole) and len(whole) == meta.splits["train"].num_examples


def test_crop_to_aspect_ratio_keeps_the_centre(tmp_path):
    root = tmp_path / "wide"
    root.mkdir()
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, 100:200] = (255, 255, 255)  # a white centre square between black sides
    for i, cls in enumerate(("a", "b")):
        (root / f"{cls}.{i}.jpg").write_bytes(encode(Image.fromarray(pixels), quality=100))
    out = convert(root, tmp_path / "out", "--splits", "train=1")
    cropped, _ = next(iter(load(str(out), "train", batch_size=2, image_size=32, crop_to_aspect_ratio=True)))
    stretched, _ = next(iter(load(str(out), "train", batch_size=2, image_size=32)))
    assert cropped.numpy()[:, 4:-4, 4:-4].min() > 200  # the white centre fills the square
    assert stretched.numpy()[:, :, :8].max() < 60  # stretched keeps the black sides


def graph_ops(dataset: tf.data.Dataset) -> set[str]:
    """Every op in a dataset's graph, its functions (the map's per-image code) included."""
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}


RESIZE_OPS = {"ResizeBilinear", "ImageProjectiveTransformV3", "ScaleAndTranslate"}


@pytest.fixture(scope="module")
def fixed(fixed_pets):
    """The Kaggle sample stored at exactly 40x56 (HxW) (conftest's)."""
    return fixed_pets


def test_a_fixed_size_dataset_is_only_decoded(fixed):
    info = metadata.read(str(fixed))
    assert info.size == info.stored_size == (40, 56)
    stored = load(str(fixed), "test", batch_size=64, image_size=None)
    asked = load(str(fixed), "test", batch_size=64, image_size=(40, 56))
    resized = load(str(fixed), "test", batch_size=64, image_size=32)
    assert not graph_ops(stored) & RESIZE_OPS and not graph_ops(asked) & RESIZE_OPS
    assert "ResizeBilinear" in graph_ops(resized)
    images = next(iter(stored))[0].numpy()
    assert images.shape == (info.splits["test"].num_examples, 40, 56, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, next(iter(asked))[0].numpy())
    first = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(info.shard_paths("test")))).numpy())
    np.testing.assert_array_equal(
        images[0],
        tf.io.decode_jpeg(first.features.feature["image"].bytes_list.value[0], dct_method="INTEGER_FAST").numpy(),
    )


def test_image_size_none_on_varying_sizes_says_what_to_do(pets):
    with pytest.raises(
        metadata.DatasetError,
        match=f"{pets}: image_size=None needs images of one size.*pass image_size, or convert with --size",
    ):
        load(str(pets), "train", batch_size=4, image_size=None)


def test_size_and_max_side_are_refused_together(kaggle_dir, tmp_path, capsys):
    assert main(["convert", str(kaggle_dir), str(tmp_path / "out"), "--size", "32", "--max-side", "64"]) == 2
    assert "error: --size and --max-side exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_augment_in_the_pipeline(pets):
    plain = next(iter(load(str(pets), "test", batch_size=8, image_size=32, shuffle=False)))[0].numpy()
    augmented = [
        next(iter(load(str(pets), "test", batch_size=8, image_size=32, shuffle=False, seed=3, augment="seed004")))[
            0
        ].numpy()
        for _ in range(2)
    ]
    assert augmented[0].shape == plain.shape and augmented[0].dtype == np.uint8
    assert not np.array_equal(augmented[0], plain)
    np.testing.assert_array_equal(augmented[0], augmented[1])


def tfrecords(path: str) -> list[bytes]:
    """A TFRecord file's records by its framing (8-byte length, its masked CRC-32C, data, the data's masked CRC-32C),
    read without TensorFlow or shardflow; AssertionError (or struct.error) for a file that is not framed so."""

    def masked(data: bytes) -> int:
        crc = google_crc32c.value(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    data, records, at = pathlib.Path(path).read_bytes(), [], 0
    while at < len(data):
        length, length_crc = struct.unpack_from("<QI", data, at)
        assert length_crc == masked(data[at : at + 8]), f"{path}: no TFRecord length at byte {at}"
        record = data[at + 12 : at + 12 + length]
        assert struct.unpack_from("<I", data, at + 12 + length) == (masked(record),), f"{path}: byte {at}"
        records.append(record)
        at += 16 + length
    return records


def test_the_usual_shard_glob_finds_only_shards(pets):
    """`tf.data.TFRecordDataset(tf.io.gfile.glob("OUT/*.tfrecord*"))`, the usual way to read TFRecords, and other
    TFRecord readers get exactly the shards: the record indexes written with them (DALI's) are out of the way, even
    of a recursive glob."""
    info = metadata.read(str(pets))
    found = tf.io.gfile.glob(str(pets / "*.tfrecord*"))
    assert sorted(found) == sorted(path for split in info.splits for path in info.shard_paths(split))
    assert sum(1 for _ in tf.data.TFRecordDataset(found)) == info.num_records
    assert sum(len(tfrecords(path)) for path in found) == info.num_records
    assert sorted(glob.glob(str(pets / "**" / "*.tfrecord*"), recursive=True)) == sorted(found)


def test_errors_name_what_is_wrong(pets, tmp_path):
    with pytest.raises(metadata.DatasetError, match="no split 'validation'"):
        load(str(pets), "validation", batch_size=4, image_size=16)
    with pytest.raises(metadata.DatasetError, match="no such dataset directory"):
        load(str(tmp_path / "nope"), "train", batch_size=4, image_size=16)
    with pytest.raises(metadata.DatasetError, match="not a shardflow dataset"):
        load(str(tmp_path), "train", batch_size=4, image_size=16)
    with pytest.raises(ValueError, match="batch_size"):
        load(str(pets), "train", batch_size=0, image_size=16)
    with pytest.raises(ValueError, match="image_size"):
        load(str(pets), "train", batch_size=4, image_size=(16, -1))
    broken = tmp_path / "broken"
    shutil.copytree(pets, broken)
    shard = metadata.read(str(broken)).splits["train"].shards[1].filename
    data = (broken / shard).read_bytes()
    (broken / shard).write_bytes(data[: len(data) // 2])
    with pytest.raises(metadata.DatasetError, match=f"train.*{shard}.*truncated"):
        load(str(broken), "train", batch_size=4, image_size=16)
    (broken / shard).unlink()
    with pytest.raises(metadata.DatasetError, match=f"{shard} is missing"):
        load(str(broken), "train", batch_size=4, image_size=16)
    (broken / metadata.DATASET_INFO).unlink()
    (broken / metadata.STAGING).mkdir()
    with pytest.raises(metadata.DatasetError, match="incomplete"):
        load(str(broken), "train", batch_size=4, image_size=16)
