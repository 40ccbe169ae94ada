"""`shardflow verify` and the reader on damaged or hostile shards: every problem named, nothing skipped."""

from __future__ import annotations

import json
import shutil

import pytest
import tensorflow as tf
from PIL import Image

from shardflow.cli import main
from shardflow.core import metadata, record_index, schema
from shardflow.core.framing import frame
from shardflow.pipeline import damaged_shards_named, load
from tests.conftest import encode


@pytest.fixture(scope="module")
def dataset(pets_in_shards):
    """The 60-image Kaggle sample, split train/test, several shards per split (conftest's; `copy` to damage it)."""
    return pets_in_shards


@pytest.fixture
def copy(dataset, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(dataset, target)
    return target


def first_shard(data, split="train"):
    return data / metadata.read(str(data)).splits[split].shards[0].filename


def test_a_good_dataset_verifies(dataset, capsys):
    assert main(["verify", str(dataset)]) == 0
    assert "OK, 60 records" in capsys.readouterr().out


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: path.write_bytes(_flip(path.read_bytes(), 5000)), "CRC mismatch"),
        (lambda path: path.write_bytes(path.read_bytes()[:-100]), "truncated"),
        (lambda path: path.unlink(), "missing"),
    ],
)
def test_damage_is_named(copy, capsys, damage, message):
    shard = first_shard(copy)
    damage(shard)
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"train: {shard.name}: " in out and message in out
    assert len(out.splitlines()) == 1  # only the damaged shard is reported


@pytest.mark.parametrize(
    "damage, message",
    [  # the last digit of line 2 (the second record's size) flipped
        (lambda data: _flip(data, data.index(b"\n", data.index(b"\n") + 1) - 1, 0x01), "line 2 is '"),
        (lambda data: data[: data.rindex(b"\n", 0, -1) + 1], " lines for the shard's "),  # the last line lost
    ],
)
def test_a_record_index_that_does_not_match_its_shard_is_named(copy, capsys, damage, message):
    """The metadata's checksums cover the shards, not their indexes (DALI's): verify checks each index against its
    shard's framing instead."""
    shard = first_shard(copy)
    index = copy / record_index.index_filename(shard.name)
    index.write_bytes(damage(index.read_bytes()))
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert (
        out.startswith(
            f"train: {shard.name}: its record index {record_index.index_filename(shard.name)} does not match it ("
        )
        and message in out
        and "delete the index" in out
    )
    assert len(out.splitlines()) == 1
    index.unlink()  # as the message says: a missing index is built on first use
    assert main(["verify", str(copy)]) == 0


def test_an_image_that_does_not_decode_is_named(copy, capsys):
    shard = first_shard(copy, "test")
    records = schema.RecordSchema(("cat", "dog"), 3, "passthrough")
    shard.write_bytes(frame(records.serialize(b"\xff\xd8 not really a jpeg", 0, "cat.1.jpg")))
    assert main(["verify", str(copy)]) == 1
    assert "record 0 (cat.1.jpg): image does not decode" in capsys.readouterr().out


def test_the_reader_names_a_corrupted_shard(copy):
    shard = first_shard(copy)
    shard.write_bytes(_flip(shard.read_bytes(), 5000))
    with pytest.raises(metadata.DatasetError, match=f"{shard.name}.*CRC mismatch"):
        with damaged_shards_named(str(copy)):
            for _ in load(str(copy), "train", batch_size=4, image_size=16):
                pass


def test_preview_names_a_corrupted_shard_instead_of_a_traceback(copy, tmp_path, capsys):
    shard = first_shard(copy)
    shard.write_bytes(_flip(shard.read_bytes(), 5000))
    assert main(["preview", str(copy), "--out", str(tmp_path / "grid.png")]) == 2
    error = capsys.readouterr().err
    assert f"damaged shard(s) train: {shard.name}" in error and "Traceback" not in error


def test_the_reader_refuses_a_decompression_bomb(tmp_path):
    """A shard crafted elsewhere with a 95 MP PNG: refused from its header, before any pixel is decoded."""
    root = tmp_path / "src"
    root.mkdir()
    for name in ("cat.0.png", "dog.0.png"):
        (root / name).write_bytes(encode(Image.new("RGB", (8, 8)), "PNG"))
    assert (
        main(
            [
                "convert",
                str(root),
                str(tmp_path / "data"),
                "--image-format",
                "png",
                "--splits",
                "train=1",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    bomb = encode(Image.new("1", (10_000, 9_500)), "PNG")
    craft_first_shard(tmp_path / "data", [bomb, bomb], "png")
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixel budget"):
        for _ in load(str(tmp_path / "data"), "train", batch_size=2, image_size=16):
            pass


def test_a_fixed_size_dataset_holding_another_size_is_named(kaggle_dir, tmp_path, capsys):
    """A --size shard crafted elsewhere: a larger JPEG decodes no more than the stored size's pixels when read,
    a smaller one fails the read, and verify names both."""
    assert (
        main(
            [
                "convert",
                str(kaggle_dir),
                str(tmp_path / "data"),
                "--size",
                "24x32",
                "--splits",
                "train=1",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    craft_first_shard(tmp_path / "data", [encode(Image.new("RGB", (3200, 2400))), encode(Image.new("RGB", (32, 24)))])
    images, _ = next(iter(load(str(tmp_path / "data"), "train", batch_size=2, image_size=None, shuffle=False)))
    assert images.shape == (2, 24, 32, 3)
    assert main(["verify", str(tmp_path / "data")]) == 1
    assert (
        "record 0 (cat.0.jpg): image is 2400x3200, not the dataset's stored size 24x32 (HxW)" in capsys.readouterr().out
    )
    craft_first_shard(tmp_path / "data", [encode(Image.new("RGB", (16, 24)))] * 2)
    with pytest.raises(tf.errors.InvalidArgumentError):
        next(iter(load(str(tmp_path / "data"), "train", batch_size=2, image_size=None)))
    assert main(["verify", str(tmp_path / "data")]) == 1
    assert "record 0 (cat.0.jpg): image is 24x16, not the dataset's stored size 24x32 (HxW)" in capsys.readouterr().out


def craft_first_shard(data, images: list[bytes], image_format: str = "passthrough") -> None:
    """The first train shard replaced by records of `images` (labelled cat), and the metadata crafted to match,
    as a shard made elsewhere could be."""
    info_path = data / metadata.SHARDFLOW_INFO
    info = json.loads(info_path.read_text())
    records = schema.RecordSchema(("cat", "dog"), 3, image_format)
    shard = first_shard(data)
    shard.write_bytes(b"".join(frame(records.serialize(image, 0, f"cat.{i}.jpg")) for i, image in enumerate(images)))
    train = info["splits"]["train"]
    train["num_bytes"] += shard.stat().st_size - train["shards"][0]["num_bytes"]
    info["num_records"] += len(images) - train["shards"][0]["num_records"]
    train["num_examples"] += len(images) - train["shards"][0]["num_records"]
    train["shards"][0].update(num_bytes=shard.stat().st_size, num_records=len(images))
    info_path.write_text(json.dumps(info))


def test_counts_must_add_up(copy, capsys):
    rejects = copy / metadata.REJECTS
    rejects.write_text(rejects.read_text() + '{"path": "ghost.jpg", "reason": "invented"}\n')
    assert main(["verify", str(copy)]) == 1
    assert "rejects.jsonl lists 1 files, the metadata says 0" in capsys.readouterr().out
    rejects.write_text("")
    (copy / metadata.DUPLICATES).write_text(
        json.dumps(
            {
                "kind": "near",
                "members": [
                    {"path": p, "split": s, "label": "cat"} for p, s in (("cat.1.jpg", "train"), ("cat.2.jpg", "test"))
                ],
            }
        )
    )
    assert main(["verify", str(copy), "--no-decode"]) == 1
    assert (
        "duplicates.jsonl lists 1 groups (1 leaking, 0 whose labels differ), the metadata says 0 (0, 0)"
        in capsys.readouterr().out
    )
    (copy / metadata.DUPLICATES).unlink()
    assert main(["verify", str(copy), "--no-decode"]) == 1
    assert "duplicates.jsonl is missing" in capsys.readouterr().out


def _flip(data: bytes, offset: int, bits: int = 0xFF) -> bytes:
    return data[:offset] + bytes([data[offset] ^ bits]) + data[offset + 1 :]


def test_metadata_that_contradicts_itself_is_refused(copy):
    info_path = copy / metadata.SHARDFLOW_INFO
    info = json.loads(info_path.read_text())
    info["num_records"] += 1
    info_path.write_text(json.dumps(info))
    with pytest.raises(metadata.DatasetError, match="contradicts itself: num_records is 61, its shards add up to 60"):
        metadata.read(str(copy))


def test_a_record_without_a_key_of_the_schema_is_named(copy, capsys):
    shard = first_shard(copy, "test")
    example = tf.train.Example()
    example.features.feature["image"].bytes_list.value.append(encode(Image.new("RGB", (4, 4))))
    shard.write_bytes(frame(example.SerializeToString()))
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "record 0: not a record of this dataset (Feature: image/filename (data type: string) is required" in out
