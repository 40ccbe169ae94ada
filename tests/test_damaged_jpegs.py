"""Damaged JPEGs that still decode: bytes flipped or cut in the compressed data after the SOS marker, so libjpeg
decodes a garbled picture with a warning that PIL keeps to itself. Conversion rejects them with libjpeg's words
(or keeps and lists them, --keep-damaged-jpegs), verify names their record and shard, the trainer warns."""

from __future__ import annotations

import functools
import io
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from shardflow.cli import main
from shardflow.core import metadata
from shardflow.core.duplicates import image_hashes, key_reduction
from shardflow.core.images import ImageOptions, jpeg_warning, prepare_encoded
from shardflow.testing.sample_data import render_image, write_sample_data
from shardflow.trainers.options import TrainOptions
from shardflow.trainers.train import _warnings
from tests.conftest import encode

PREMATURE = "corrupt JPEG data: premature end of data segment"


def photo(seed: int, **params) -> bytes:
    """A photo-like sample picture (gradient, texture, shapes; 200-500 px a side) as Pillow writes a JPEG."""
    return encode(render_image(seed % 2, np.random.default_rng(seed)), quality=90, **params)


def scan_start(data: bytes) -> int:
    """Where the entropy-coded data of the first scan begins: just after the SOS marker's header."""
    position = 2
    while data[position + 1] != 0xDA:
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")


@functools.cache
def flipped(seed: int, progressive: bool = False) -> bytes:
    """A photo with bytes flipped in its entropy-coded data, chosen (seeded) so that libjpeg's Huffman decoder
    finishes the scan early: "N extraneous bytes before marker 0xd9"."""
    good = photo(seed, progressive=progressive)
    start, rng = scan_start(good), np.random.default_rng(seed)
    while True:
        damaged = bytearray(good)
        for offset in rng.integers(start, len(good) - 2, size=3):
            damaged[offset] ^= 0x55  # never makes 0xFF from a byte that could not be stuffed
        if damaged.count(b"\xff") == good.count(b"\xff") and "extraneous" in (jpeg_warning(bytes(damaged)) or ""):
            return bytes(damaged)


def cut(seed: int) -> bytes:
    """A photo whose entropy-coded data stops halfway, the end-of-image marker still there (a download cut and
    closed): libjpeg fills the rest with grey, "premature end of data segment"."""
    good = photo(seed)
    return good[: (scan_start(good) + len(good)) // 2] + b"\xff\xd9"


def tensorflow_warns(data: bytes, capfd) -> str:
    """What TensorFlow's JPEG decoder (libjpeg in C++) prints to stderr decoding `data`, which it does decode."""
    capfd.readouterr()
    assert tf.io.decode_jpeg(data).shape[2] == 3
    return capfd.readouterr().err


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: flipped(3), "extraneous bytes before marker 0xd9"),
        (lambda: flipped(4, progressive=True), "extraneous bytes before marker"),
        (lambda: cut(5), "premature end of data segment"),
    ],
)
def test_damaged_jpegs_decode_with_a_warning_that_becomes_the_reason(make, expected, capfd):
    data = make()
    printed = tensorflow_warns(data, capfd)  # the bare line `shardflow train` printed every epoch
    assert "Corrupt JPEG data: " in printed and expected in printed
    Image.open(io.BytesIO(data)).load()  # PIL decodes it without a word
    warning = jpeg_warning(data)
    assert warning.startswith("corrupt JPEG data: ") and expected in warning
    assert "C" + warning[1:] in printed  # libjpeg's own words
    for options in (ImageOptions(), ImageOptions(max_side=100), ImageOptions(image_format="png")):
        assert prepare_encoded(data, options).warning == warning


@pytest.mark.parametrize("seed", range(6))
def test_undamaged_photos_have_no_warning_and_the_pixels_pil_decodes(seed, capfd):
    """The JPEG check shares the decode: simplejpeg's pixels are PIL's (at the same DCT scale), so statistics and
    duplicate keys are those PIL's decode gave."""
    data = photo(seed, progressive=seed % 2 == 1)
    assert tensorflow_warns(data, capfd) == ""
    prepared = prepare_encoded(data, ImageOptions(), hashes=True)
    assert prepared.warning is None and prepared.stats.passthrough and prepared.data == data
    image = Image.open(io.BytesIO(data))
    reduction = key_reduction(image.size)
    assert reduction > 1
    image.draft("RGB", (image.width // reduction, image.height // reduction))
    assert prepared.hashes == image_hashes(image)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Six sample photos, plus cat.100.jpg with flipped bytes and dog.100.jpg cut short."""
    root = tmp_path_factory.mktemp("damaged") / "src"
    write_sample_data(root, n=6, seed=7)
    (root / "cat.100.jpg").write_bytes(flipped(3))
    (root / "dog.100.jpg").write_bytes(cut(5))
    return root


def test_conversion_rejects_them_with_libjpegs_words(source, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(source), str(out), "--workers", "1"]) == 0
    assert "6 records, 2 rejected" in capsys.readouterr().out
    rejects = {r["path"]: r["reason"] for r in metadata.read_rejects(str(out))}
    assert rejects == {"cat.100.jpg": jpeg_warning(flipped(3)), "dog.100.jpg": PREMATURE}
    assert metadata.read(str(out)).damaged_jpegs == 0 and (out / metadata.DAMAGED_JPEGS).read_text() == ""
    assert main(["verify", str(out)]) == 0


@pytest.fixture(scope="module")
def kept(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("kept") / "data"
    assert (
        main(["convert", str(source), str(out), "--workers", "1", "--splits", "train=1", "--keep-damaged-jpegs"]) == 0
    )
    return out


def test_keep_damaged_jpegs_keeps_lists_and_warns(source, kept, tmp_path, capsys):
    info = metadata.read(str(kept))
    assert (info.num_records, info.num_rejected, info.damaged_jpegs) == (8, 0, 2)
    listed = [json.loads(line) for line in (kept / metadata.DAMAGED_JPEGS).read_text().splitlines()]
    assert [(d["path"], d["split"], d["warning"]) for d in listed] == [
        ("cat.100.jpg", "train", jpeg_warning(flipped(3))),
        ("dog.100.jpg", "train", PREMATURE),
    ]
    assert any(
        "--keep-damaged-jpegs kept 2 damaged JPEG(s)" in w and metadata.DAMAGED_JPEGS in w for w in info.warnings
    )
    assert "keep-damaged-jpegs" in (kept / "README.md").read_text()  # the card's warnings
    assert info.provenance.options["keep_damaged_jpegs"] is True
    assert main(["inspect", str(kept)]) == 0
    assert "damaged JPEGs kept: 2" in capsys.readouterr().out
    assert main(["convert", str(source), str(tmp_path / "again"), "--like", str(kept), "--workers", "1"]) == 0
    assert "identical to" in capsys.readouterr().out  # --like repeats the option


def test_verify_accepts_the_listed_ones_without_libjpegs_bare_line(kept, capfd):
    assert main(["verify", str(kept)]) == 0
    out, err = capfd.readouterr()
    assert "OK, 8 records in 1 shards verified; 2 of them damaged JPEGs kept by --keep-damaged-jpegs" in out
    assert "Corrupt JPEG data" not in err


def test_verify_names_the_record_and_shard_of_a_damaged_jpeg_not_listed(kept, tmp_path, capfd):
    """A dataset converted before the check (or the list lost): verify fails, naming shard, record and file."""
    old = tmp_path / "old"
    shutil.copytree(kept, old)
    listed = [json.loads(line) for line in (old / metadata.DAMAGED_JPEGS).read_text().splitlines()]
    (old / metadata.DAMAGED_JPEGS).write_text("")
    info = json.loads((old / metadata.SHARDFLOW_INFO).read_text())
    info["damaged_jpegs"] = 0
    (old / metadata.SHARDFLOW_INFO).write_text(json.dumps(info))
    capfd.readouterr()
    assert main(["verify", str(old)]) == 1
    out, err = capfd.readouterr()
    for entry in listed:
        assert f"train: {entry['shard']}: record {entry['record']} ({entry['path']}): {entry['warning']}" in out
    assert "FAILED, 1 of 1 shards (or their record indexes) damaged" in err and "Corrupt JPEG data" not in err


def test_verify_counts_the_list_against_the_metadata(kept, tmp_path, capsys):
    lost = tmp_path / "lost"
    shutil.copytree(kept, lost)
    (lost / metadata.DAMAGED_JPEGS).unlink()
    assert main(["verify", str(lost)]) == 1
    out = capsys.readouterr().out
    assert f"{metadata.DAMAGED_JPEGS} is missing" in out and "record" in out  # and both records are named


def test_the_trainer_says_where_the_kept_ones_are_listed(kept):
    warnings = _warnings(metadata.read(str(kept)), TrainOptions(), "validation")
    assert [
        w
        for w in warnings
        if "2 record(s) hold damaged JPEGs kept by --keep-damaged-jpegs" in w
        and str(kept / metadata.DAMAGED_JPEGS) in w
        and "without the file's name" in w
    ]
