"""Hard and hostile inputs: fuzzed images, symbolic links, odd file names. Nothing crashes, nothing is lost."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from shardflow.cli import main
from shardflow.core import metadata
from shardflow.pipeline import load
from shardflow.tools.verify import verify
from tests.conftest import encode, noise_image

FUZZ_CASES = 300


def fuzzed(data: bytes, rng: np.random.Generator) -> bytes:
    """A random truncation, or 1-20 random byte flips (seeded)."""
    if rng.random() < 0.3:
        return data[: int(rng.integers(0, len(data)))]
    mutable = bytearray(data)
    for offset in rng.integers(0, len(data), size=int(rng.integers(1, 21))):
        mutable[offset] ^= int(rng.integers(1, 256))
    return bytes(mutable)


@pytest.fixture(scope="module")
def fuzz_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "train"
    root.mkdir()
    rng = np.random.default_rng(2024)
    seeds = [
        encode(noise_image(48, 40, seed=1), quality=80),
        encode(noise_image(48, 40, seed=2), progressive=True),
        encode(noise_image(40, 32, seed=3), "PNG"),
        encode(noise_image(40, 32, seed=4, mode="L"), "PNG"),
    ]
    for i in range(FUZZ_CASES):
        (root / f"{('cat', 'dog')[i % 2]}.{i}.jpg").write_bytes(fuzzed(seeds[i % len(seeds)], rng))
    return root


@pytest.mark.slow
def test_fuzzed_images_never_crash_the_job(fuzz_corpus, tmp_path, capsys):
    """Most flipped JPEGs that still decode do so with a libjpeg warning (rejected by default, see
    test_damaged_jpegs): kept here, so that the reader's decoder is tried on them too."""
    assert main(["convert", str(fuzz_corpus), str(tmp_path / "out"), "--workers", "2", "--keep-damaged-jpegs"]) == 0
    info = metadata.read(str(tmp_path / "out"))
    assert info.num_inputs == FUZZ_CASES == info.num_records + info.num_rejected
    assert info.num_records > 20 and info.num_rejected > 20  # both outcomes are exercised
    assert info.damaged_jpegs > 20 and info.num_records > info.damaged_jpegs  # damaged ones and clean ones
    rejects = metadata.read_rejects(str(tmp_path / "out"))
    assert len(rejects) == info.num_rejected and all(r["reason"].strip() for r in rejects)  # each with its reason
    assert len({r["reason"].split(":")[0] for r in rejects}) > 1  # more than one kind of damage was told apart
    report = verify(str(tmp_path / "out"))  # every stored record decodes with the reader's decoder
    assert report.ok, [p for s in report.shards for p in s.problems]


def test_symbolic_links_are_listed_not_followed(tmp_path):
    root = tmp_path / "src"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    for folder in ("cat", "dog"):
        (root / folder / "0.jpg").write_bytes(encode(noise_image(16, 16)))
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(encode(noise_image(16, 16)))
    os.symlink(outside, root / "cat" / "1.jpg")  # points outside the source
    os.symlink(root, root / "dog" / "loop")  # a folder loop
    assert main(["convert", str(root), str(tmp_path / "out"), "--workers", "1"]) == 0
    rejects = {r["path"]: r["reason"] for r in metadata.read_rejects(str(tmp_path / "out"))}
    assert rejects == {
        "cat/1.jpg": "symbolic link, not followed",
        "dog/loop": "symbolic link to a folder, not followed",
    }
    assert metadata.read(str(tmp_path / "out")).num_records == 2


def test_non_utf8_and_unusual_file_names_are_kept_faithfully(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    names = [
        b"cat.\xff\xfe.jpg",
        "cat.chat \u00e9t\u00e9 #1.jpg".encode(),
        b"dog.with space.jpg",
        b"dog.0.jpg",
        b"dog.\xe9broken.jpg",
    ]
    for i, name in enumerate(names):
        data = b"" if name == b"dog.\xe9broken.jpg" else encode(noise_image(16, 16, seed=i))
        with open(os.path.join(os.fsencode(root), name), "wb") as f:
            f.write(data)
    assert main(["convert", str(root), str(tmp_path / "out"), "--splits", "train=1", "--workers", "1"]) == 0
    import tensorflow as tf

    stored = set()
    for record in tf.data.TFRecordDataset(metadata.read(str(tmp_path / "out")).shard_paths("train")):
        example = tf.train.Example.FromString(record.numpy())
        stored.add(example.features.feature["image/filename"].bytes_list.value[0])
    assert stored == set(names) - {b"dog.\xe9broken.jpg"}
    (reject,) = metadata.read_rejects(str(tmp_path / "out"))
    assert os.fsencode(reject["path"]) == b"dog.\xe9broken.jpg" and "empty" in reject["reason"]


@pytest.mark.parametrize("name", ["../outside.tfrecord", "/tmp/outside.tfrecord", "gs://bucket/outside.tfrecord"])
def test_a_dataset_cannot_send_a_reader_outside_its_folder(pets_dataset, tmp_path, capsys, name):
    """A crafted shardflow.json names a shard outside the dataset's folder (a real TFRecord file is there, so
    reading it would work): every reader refuses the dataset, naming the file name, and reads nothing."""
    data = tmp_path / "data"
    shutil.copytree(pets_dataset, data)
    info = json.loads((data / metadata.SHARDFLOW_INFO).read_text())
    shard = info["splits"]["train"]["shards"][0]
    (tmp_path / "outside.tfrecord").write_bytes((data / shard["filename"]).read_bytes())
    shard["filename"] = name
    (data / metadata.SHARDFLOW_INFO).write_text(json.dumps(info))
    with pytest.raises(metadata.DatasetError, match=r"shard file name .* is not a file name of the dataset's own"):
        load(str(data), "train", batch_size=4, image_size=32)
    for command in (["verify", str(data)], ["inspect", str(data)]):
        assert main(command) == 2
        assert f"shard file name {name!r} is not a file name" in capsys.readouterr().err


def test_rejects_and_duplicates_are_written_in_utf8_and_undecodable_names_losslessly(tmp_path):
    """rejects.jsonl says 風景 (not \\u98a8\\u666f); a name that is not UTF-8 (cp949 bytes) keeps its bytes as
    \\udcXX escapes, which json.loads turns back into the same name."""
    root = tmp_path / "src"
    root.mkdir()
    photo = encode(noise_image(16, 16, seed=1))
    files = {
        "cat.風景.jpg".encode(): b"",
        b"cat.\xb0\xa1.jpg": b"not an image",  # cp949's 가
        "dog.写真.jpg".encode(): photo,
        "dog.写真 (1).jpg".encode(): photo,
        b"dog.0.jpg": encode(noise_image(16, 16, seed=2)),
        b"cat.0.jpg": encode(noise_image(16, 16, seed=3)),
    }
    for name, data in files.items():
        with open(os.path.join(os.fsencode(root), name), "wb") as f:
            f.write(data)
    assert main(["convert", str(root), str(tmp_path / "out"), "--splits", "train=1", "--workers", "1"]) == 0
    raw = (tmp_path / "out" / metadata.REJECTS).read_bytes()
    assert "cat.風景.jpg".encode() in raw and b"\\u" + b"98a8" not in raw, raw
    assert b"cat.\\udcb0\\udca1.jpg" in raw, raw
    rejects = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert {os.fsencode(reject["path"]) for reject in rejects} == {"cat.風景.jpg".encode(), b"cat.\xb0\xa1.jpg"}
    assert metadata.read_rejects(str(tmp_path / "out")) == rejects
    duplicates = (tmp_path / "out" / metadata.DUPLICATES).read_bytes()
    assert "dog.写真 (1).jpg".encode() in duplicates and "dog.写真.jpg".encode() in duplicates, duplicates


def test_a_folder_that_cannot_be_listed_is_a_reject_not_a_silent_loss(tmp_path):
    root = tmp_path / "src"
    for folder in ("cat", "dog"):
        (root / folder).mkdir(parents=True)
        (root / folder / "0.jpg").write_bytes(encode(noise_image(16, 16)))
    deep = "cat/" + "/".join(["d" * 250] * 20)  # 5,000 characters: longer than the system's paths may be
    parent = os.open(root / "cat", os.O_RDONLY)
    for _ in range(20):  # made a level at a time, each relative to the last (no path that long is ever opened)
        os.mkdir("d" * 250, dir_fd=parent)
        child = os.open("d" * 250, os.O_RDONLY, dir_fd=parent)
        os.close(parent)
        parent = child
    image = os.open("1.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=parent)
    os.write(image, encode(noise_image(16, 16, seed=1)))
    os.close(image)
    os.close(parent)
    assert main(["convert", str(root), str(tmp_path / "out"), "--workers", "1"]) == 0
    info = metadata.read(str(tmp_path / "out"))
    assert info.num_records == 2 and info.num_rejected == 1
    (reject,) = metadata.read_rejects(str(tmp_path / "out"))
    assert deep.startswith(reject["path"].rstrip("/")) and reject["path"].endswith("/")
    assert reject["reason"] == "cannot list this folder: File name too long; its files are not converted"
