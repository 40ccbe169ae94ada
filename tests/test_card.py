"""A dataset a team can share: TFDS's DatasetInfo and OUT/README.md say what it is, how it was made and how to
load it; `tfds.load("NAME:VERSION")` finds it under ROOT/NAME/VERSION."""

from __future__ import annotations

import pytest
import tensorflow_datasets as tfds

import shardflow
from shardflow.cli import main
from shardflow.core import metadata
from shardflow.testing.sample_data import write_sample_data


def test_the_card_and_tfds_metadata_describe_the_dataset(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_sample_data(raw, n=30, seed=8)
    (raw / "cat.broken.jpg").write_bytes(b"")
    (tmp_path / "pets.bib").write_text("@misc{pets, title={Synthetic pets}}\n")
    out = tmp_path / "root" / "pets" / "1.2.0"
    assert (
        main(
            [
                "convert",
                str(raw),
                str(out),
                "--name",
                "pets",
                "--version",
                "1.2.0",
                "--max-side",
                "64",
                "--description",
                "Synthetic cats and dogs.",
                "--license",
                "CC-BY-4.0",
                "--homepage",
                "https://example.org/pets",
                "--citation",
                str(tmp_path / "pets.bib"),
                "--workers",
                "1",
            ]
        )
        == 0
    )
    dataset, info = tfds.load("pets:1.2.0", data_dir=str(tmp_path / "root"), split="train", with_info=True)
    assert str(info.version) == "1.2.0" and info.description == "Synthetic cats and dogs."
    assert info.homepage == "https://example.org/pets" and info.redistribution_info.license == "CC-BY-4.0"
    assert "Synthetic pets" in info.citation and len(list(dataset)) == info.splits["train"].num_examples
    card = (out / "README.md").read_text()
    for text in (
        "# pets 1.2.0",
        "Synthetic cats and dogs.",
        "License: CC-BY-4.0",
        "| train |",
        "1 of 31 inputs could not become records",
        "- empty file (0 bytes): 1",
        'tfds.load("pets:1.2.0", data_dir="ROOT")',
        f"shardflow {shardflow.__version__} converted",
    ):
        assert text in card, text
    made = metadata.read(str(out)).provenance
    assert made.source == str(raw) and made.runner == "FnApiRunner" and made.options["max_side"] == 64


def test_a_version_tfds_cannot_read_is_refused_before_any_work(tmp_path, capsys):
    write_sample_data(tmp_path / "raw", n=4, seed=8)
    assert main(["convert", str(tmp_path / "raw"), str(tmp_path / "out"), "--version", "2"]) == 2
    assert "--version '2': expected MAJOR.MINOR.PATCH" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_like_repeats_a_conversion_and_says_whether_it_came_out_the_same(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_sample_data(raw, n=24, seed=10)
    first = tmp_path / "v1"
    assert (
        main(["convert", str(raw), str(first), "--splits", "test=0.3,train=0.7", "--max-side", "48", "--workers", "2"])
        == 0
    )
    assert main(["convert", str(raw), str(tmp_path / "again"), "--like", str(first), "--workers", "1"]) == 0
    assert f"identical to {first}: every shard byte for byte" in capsys.readouterr().out
    again = metadata.read(str(tmp_path / "again"))
    assert again.max_side == 48 and list(again.splits) == ["train", "test"]
    assert again.provenance.source_fingerprint == metadata.read(str(first)).provenance.source_fingerprint
    (raw / "dog.0.jpg").unlink()
    assert main(["convert", str(raw), str(tmp_path / "changed"), "--like", str(first), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert f"differs from {first}: the source changed since it was made" in out and "removed: dog.0.jpg" in out
    assert main(["convert", str(raw), str(tmp_path / "x"), "--like", str(first), "--max-side", "32"]) == 2
    assert f"--like takes every option from {first}; drop --max-side" in capsys.readouterr().err
