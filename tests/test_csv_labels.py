"""`shardflow convert SRC OUT --labels FILE.csv`: each CSV shape Kaggle ships, read from real files (BOM, CRLF,
quoted fields, extra columns), joined to real images, converted by the Beam job and read back by TFDS, `load`,
the card and `inspect`."""

from __future__ import annotations

import json
import zipfile
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from shardflow.beam_jobs import csv_labels
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.beam_jobs.csv_labels import LabelsError, LabelsSpec
from shardflow.beam_jobs.splits import DEFAULT_SPLITS, split_for
from shardflow.cli import main
from shardflow.core import metadata
from shardflow.core.decoder import Decoder
from shardflow.pipeline import load
from shardflow.tools.verify import verify
from tests import csv_corpora
from tests.csv_corpora import write_csv


def stored(out) -> dict[str, tuple[str, frozenset[str]]]:
    """Every record of a dataset: source path -> (split, its class names)."""
    info = metadata.read(str(out))
    decoder = Decoder(info.schema)
    found = {}
    for split in info.splits:
        for serialized in tf.data.TFRecordDataset(info.shard_paths(split)):
            fields = decoder.parse(serialized)
            indices = np.atleast_1d(fields.label.numpy()).tolist()
            found[fields.filename.numpy().decode()] = (split, frozenset(info.class_names[i] for i in indices))
    return found


def convert_cli(*args) -> int:
    return main(["convert", *map(str, args), "--workers", "1"])


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("kaggle_csv")
    return {
        name: getattr(csv_corpora, name)(root / name)
        for name in ("cactus", "dog_breed", "planet", "plant_pathology", "chest_xray")
    }


@pytest.fixture(scope="module")
def planet_out(corpora, tmp_path_factory):
    """Planet converted from Python, at ROOT/planet/1.0.0 (where `tfds.load("planet", data_dir=ROOT)` finds it)."""
    out = tmp_path_factory.mktemp("tfds_root") / "planet" / "1.0.0"
    corpus = corpora["planet"]
    convert(str(corpus.src), str(out), ConvertOptions(name="planet", labels=str(corpus.labels_csv), workers=1))
    return out


# -- the CSV file alone: shapes, detection, errors -----------------------------------------------------------


def test_each_shape_is_detected(corpora):
    expected = {  # id column, label columns, separator, multi-label, class names
        "cactus": ("id", ("has_cactus",), None, False, ["0", "1"]),
        "planet": ("image_name", ("tags",), " ", True, sorted(csv_corpora.TAGS)),
        "plant_pathology": ("image_id", csv_corpora.DISEASES, None, False, list(csv_corpora.DISEASES)),
    }
    for name, (id_column, columns, separator, multi, names) in expected.items():
        corpus = corpora[name]
        paths = sorted(str(p.relative_to(corpus.src)) for p in corpus.src.rglob("*") if p.is_file())
        matched = csv_labels.match(LabelsSpec(str(corpus.labels_csv)), paths)
        source = matched.source
        assert (source.id_column, source.label_columns, source.separator) == (id_column, columns, separator), name
        assert (matched.label_sets is not None, matched.class_names) == (multi, names), name
        assert sorted(matched.labels) == sorted(corpus.labels), name
        assert sorted(matched.no_label) == sorted(corpus.unlabelled), name
        assert [identifier for _, identifier in matched.without_images] == list(corpus.without_images), name


def test_a_bom_crlf_and_ids_with_extensions(corpora):
    corpus = corpora["cactus"]
    assert corpus.labels_csv.read_bytes().startswith(b"\xef\xbb\xbfid,has_cactus\r\n")
    matched = csv_labels.match(LabelsSpec(str(corpus.labels_csv)), ["00000000.jpg", "stray.jpg", "notes.txt"])
    assert matched.labels == {"00000000.jpg": 0} and matched.source.ids_with_extension
    assert matched.no_label == {"stray.jpg": "no label: no row of train.csv names it"}  # notes.txt: not an image
    assert matched.source.rows == 25 and matched.source.without_images == 24


def test_ids_match_a_path_or_a_name_with_or_without_the_extension(tmp_path):
    labels = tmp_path / "labels.csv"
    write_csv(labels, ["file", "label"], [["a/one.png", "x"], ["two", "y"], ["three.jpg", "x"], ["sub/four", "y"]])
    paths = ["a/one.png", "b/two.jpg", "c/three.jpg", "sub/four.jpeg"]
    matched = csv_labels.match(LabelsSpec(str(labels)), paths)
    assert matched.labels == {"a/one.png": 0, "b/two.jpg": 1, "c/three.jpg": 0, "sub/four.jpeg": 1}


def test_a_quoted_comma_is_part_of_a_class_name_and_extra_columns_need_naming(corpora):
    corpus = corpora["dog_breed"]
    paths = [f"d{i:04d}.jpg" for i in range(24)]
    with pytest.raises(
        LabelsError,
        match=r"which of its columns 'breed', 'source' holds the labels\? Pass "
        r"`label_columns`",
    ):
        csv_labels.match(LabelsSpec(str(corpus.labels_csv)), paths)
    matched = csv_labels.match(LabelsSpec(str(corpus.labels_csv), label_columns=("breed",)), paths)
    assert matched.class_names == sorted(csv_corpora.BREEDS) and matched.label_sets is None
    assert not matched.source.ids_with_extension


def test_pipe_separated_findings_among_other_columns(corpora):
    corpus = corpora["chest_xray"]
    paths = sorted(corpus.labels)
    matched = csv_labels.match(LabelsSpec(str(corpus.labels_csv), label_columns=("Finding Labels",)), paths)
    assert matched.source.separator == "|" and matched.class_names == sorted(csv_corpora.FINDINGS)
    sets = {
        path: frozenset(matched.class_names[i] for i in matched.label_sets[label])
        for path, label in matched.labels.items()
    }
    assert sets == corpus.labels


def test_spaces_in_values_are_tags_only_when_said(tmp_path):
    labels = tmp_path / "labels.csv"
    write_csv(labels, ["id", "breed"], [["a", "golden retriever"], ["b", "dingo"], ["c", "boston bull"]])
    with pytest.raises(LabelsError, match=r"hold spaces \(e.g. 'golden retriever'\): pass `label_separator` ' '"):
        csv_labels.match(LabelsSpec(str(labels)), ["a.jpg", "b.jpg", "c.jpg"])
    names = csv_labels.match(LabelsSpec(str(labels), separator="none"), ["a.jpg", "b.jpg", "c.jpg"]).class_names
    assert names == ["boston bull", "dingo", "golden retriever"]
    tags = csv_labels.match(LabelsSpec(str(labels), separator=" "), ["a.jpg", "b.jpg", "c.jpg"])
    assert tags.label_sets is not None and "retriever" in tags.class_names


def test_one_label_per_row_is_single_label_unless_multi_label_is_asked(corpora):
    corpus = corpora["plant_pathology"]
    paths = sorted(corpus.labels)
    assert csv_labels.match(LabelsSpec(str(corpus.labels_csv)), paths).label_sets is None
    forced = csv_labels.match(LabelsSpec(str(corpus.labels_csv), multi_label=True), paths)
    assert sorted(forced.label_sets) == [(0,), (1,), (2,), (3,)]


def test_a_semicolon_delimited_file_with_an_empty_label(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("id;label\na;cat\nb;\nc;dog\n")
    matched = csv_labels.match(LabelsSpec(str(labels)), ["a.jpg", "b.jpg", "c.jpg"])
    assert matched.labels == {"a.jpg": 0, "c.jpg": 1}
    assert matched.no_label == {"b.jpg": "no label: its row in labels.csv (line 3) gives none"}


@pytest.mark.parametrize(
    "text, paths, message",
    [
        ("id,label\na,cat\nb,dog\na,dog\n", ["a.jpg", "b.jpg"], r"id 'a' is given twice \(lines 2 and 4\)"),
        ("id,label\na,cat\nb,dog\n", ["x/a.jpg", "y/a.png", "b.jpg"], r"id 'a' \(line 2\) names two files"),
        ("id,label\nq,cat\nr,dog\n", ["a.jpg"], r"no column names the source's files"),
        ("id,a,b\nx,1,0\ny,0,2\n", ["x.jpg", "y.jpg"], r"which of its columns 'a', 'b' holds the labels"),
        ("id,label\nx,cat\ny,cat\n", ["x.jpg", "y.jpg"], r"only 1 class \('cat'\); a classifier needs at least two"),
        ("id,label\nx,cat,extra\n", ["x.jpg"], r"line 2 has 3 fields, the header 2"),
        ("id,label\n", ["x.jpg"], r"a header but no rows"),
        ("id,label\n,cat\nb,dog\n", ["b.jpg"], r"line 2 has an empty id"),
    ],
)
def test_bad_files_are_refused_naming_the_problem(tmp_path, text, paths, message):
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    with pytest.raises(LabelsError, match=message):
        csv_labels.match(LabelsSpec(str(labels)), paths)


def test_given_columns_are_checked(tmp_path):
    labels = tmp_path / "labels.csv"
    write_csv(labels, ["id", "a", "b"], [["x", "1", "0"], ["y", "0", "2"]])
    with pytest.raises(LabelsError, match=r"line 3, column 'b': '2' is not 0 or 1"):
        csv_labels.match(LabelsSpec(str(labels), label_columns=("a", "b")), ["x.jpg", "y.jpg"])
    with pytest.raises(LabelsError, match=r"no column 'c' \(`label_columns`\); its columns: 'id', 'a', 'b'"):
        csv_labels.match(LabelsSpec(str(labels), label_columns=("c",)), ["x.jpg", "y.jpg"])
    with pytest.raises(LabelsError, match=r"'id' is the id column"):
        csv_labels.match(LabelsSpec(str(labels), id_column="id", label_columns=("id",)), ["x.jpg"])
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,label\nx,caf\xe9\ny,dog\n".encode("latin-1"))
    with pytest.raises(LabelsError, match=r"not UTF-8 text \(byte 0xe9"):
        csv_labels.match(LabelsSpec(str(latin)), ["x.jpg", "y.jpg"])


# -- conversions ---------------------------------------------------------------------------------------------


def test_cactus_from_the_cli(corpora, tmp_path, capsys):
    corpus = corpora["cactus"]
    out = tmp_path / "cactus"
    assert convert_cli(corpus.src, out, "--labels", corpus.labels_csv) == 0
    printed = capsys.readouterr().out
    assert "labels from" in printed and "1 naming no image, listed in labels_without_images.jsonl" in printed
    records = stored(out)
    assert {path: classes for path, (_, classes) in records.items()} == corpus.labels
    assert all(split == split_for(path, DEFAULT_SPLITS) for path, (split, _) in records.items())  # path-hash stable
    info = metadata.read(str(out))
    assert (info.layout, info.class_names, info.multi_label) == ("csv", ("0", "1"), False)
    assert info.num_inputs == 25 and info.num_rejected == 1 and not info.problems()
    no_row = "no label: no row of train.csv names it"
    assert metadata.read_rejects(str(out)) == [{"path": "stray.jpg", "reason": no_row}]
    lines = (out / metadata.LABELS_WITHOUT_IMAGES).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"line": 26, "id": "gone.jpg"}]
    assert "## Labels" in (out / "README.md").read_text() and "- no label: 1" in (out / "README.md").read_text()
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.features["label"].names == ["0", "1"]
    assert verify(str(out)).ok


def test_a_zip_as_kaggle_ships_it(corpora, tmp_path):
    corpus = corpora["dog_breed"]
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(corpus.src.iterdir()):
            zf.write(path, f"train/{path.name}")
    out = tmp_path / "dogs"
    assert convert_cli(archive, out, "--labels", corpus.labels_csv, "--label-column", "breed") == 0
    assert {path: classes for path, (_, classes) in stored(out).items()} == corpus.labels


def test_planet_reads_with_plain_tfds_as_multi_label(corpora, planet_out):
    corpus = corpora["planet"]
    info = metadata.read(str(planet_out))
    assert info.multi_label and info.class_names == tuple(sorted(csv_corpora.TAGS))
    records = stored(planet_out)
    assert {path: classes for path, (_, classes) in records.items()} == corpus.labels
    found = {}
    for split in info.splits:
        for example in tfds.load("planet", data_dir=str(planet_out.parent.parent), split=split):
            names = [info.class_names[i] for i in example["label"].numpy()]
            found[example["image/filename"].numpy().decode()] = frozenset(names)
    assert found == corpus.labels
    builder = tfds.builder_from_directory(str(planet_out))
    assert builder.info.features["label"].feature.names == list(info.class_names)
    assert verify(str(planet_out)).ok


def test_load_gives_multi_hot_labels(corpora, planet_out):
    info = metadata.read(str(planet_out))
    train = [classes for split, classes in stored(planet_out).values() if split == "train"]
    images, labels = next(iter(load(str(planet_out), "train", batch_size=64, image_size=16, shuffle=False)))
    assert labels.dtype == tf.float32 and labels.shape == (len(train), len(info.class_names))
    assert set(np.unique(labels.numpy())) == {0.0, 1.0} and images.shape[1:] == (16, 16, 3)
    multi_hot = [frozenset(info.class_names[i] for i in np.flatnonzero(row)) for row in labels.numpy()]
    assert Counter(multi_hot) == Counter(train)


def test_frequencies_and_cooccurrence_in_metadata_card_and_inspect(corpora, planet_out, capsys):
    corpus = corpora["planet"]
    info = metadata.read(str(planet_out))
    names = list(info.class_names)
    expected = np.zeros((len(names), len(names)), int)
    for classes in corpus.labels.values():
        for a in classes:
            for b in classes:
                expected[names.index(a), names.index(b)] += 1
    total = sum(np.array(split.cooccurrence) for split in info.splits.values())
    np.testing.assert_array_equal(total, expected)
    for split in info.splits.values():
        assert split.label_counts == {name: split.cooccurrence[i][i] for i, name in enumerate(names)}
    card = (planet_out / "README.md").read_text()
    together = expected[names.index("clear"), names.index("primary")]
    assert "## Labels" in card and "Co-occurrence" in card
    assert f"| clear | {expected[1, 0]} | {expected[1, 1]} |" in card
    assert main(["inspect", str(planet_out)]) == 0
    text = capsys.readouterr().out
    assert "multi-label" in text and "classes most often together:" in text and f"clear & primary {together}" in text
    assert metadata.read(str(planet_out)).to_json() == info.to_json()  # the fields survive a round trip


def test_preview_names_each_images_classes_and_dali_declines(planet_out, tmp_path):
    assert (
        main(
            [
                "preview",
                str(planet_out),
                "--out",
                str(tmp_path / "grid.png"),
                "--images",
                "3",
                "--variants",
                "0",
                "--image-size",
                "32",
            ]
        )
        == 0
    )
    assert (tmp_path / "grid.png").stat().st_size > 0
    with pytest.raises(ValueError, match="`backend` .dali. does not support multi-label datasets"):
        load(str(planet_out), "train", batch_size=4, image_size=16, backend="dali")
    assert "tf.one_hot(label, 5)" in (planet_out / "README.md").read_text()


def test_split_counts_are_refused_for_multi_label(corpora, tmp_path, capsys):
    corpus = corpora["planet"]
    assert (
        convert_cli(corpus.src, tmp_path / "out", "--labels", corpus.labels_csv, "--split-counts", "train=5,test=2")
        == 2
    )
    assert (
        "--split-counts takes exact records per class, which images of several classes each (multi-label) "
        "cannot give" in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="`split_counts` takes exact records per class"):
        ConvertOptions(labels="x.csv", multi_label=True, split_counts={"train": 5})


def test_split_counts_apply_to_single_label_files(corpora, tmp_path):
    corpus = corpora["plant_pathology"]
    out = tmp_path / "plants"
    assert convert_cli(corpus.src, out, "--labels", corpus.labels_csv, "--split-counts", "train=4,test=2") == 0
    info = metadata.read(str(out))
    assert info.class_names == csv_corpora.DISEASES and not info.multi_label  # the columns' order
    assert {name: dict(split.label_counts) for name, split in info.splits.items()} == {
        "train": dict.fromkeys(csv_corpora.DISEASES, 4),
        "test": dict.fromkeys(csv_corpora.DISEASES, 2),
    }
    assert info.num_unselected == 0 and info.num_rejected == 3  # Test_*.jpg: no row


def test_chest_xray_pngs_in_folders_with_the_cli(corpora, tmp_path, capsys):
    corpus = corpora["chest_xray"]
    out = tmp_path / "chest"
    assert convert_cli(corpus.src, out, "--labels", corpus.labels_csv, "--label-column", "Finding Labels") == 0
    records = stored(out)
    assert {path: classes for path, (_, classes) in records.items()} == corpus.labels
    info = metadata.read(str(out))
    assert info.multi_label and "No Finding" in info.class_names and info.labels_file.separator == "|"


def test_dog_breeds_with_a_named_column_and_the_like_of_it(corpora, tmp_path, capsys):
    corpus = corpora["dog_breed"]
    out = tmp_path / "dogs"
    assert convert_cli(corpus.src, out, "--labels", corpus.labels_csv, "--label-column", "breed") == 0
    assert {path: classes for path, (_, classes) in stored(out).items()} == corpus.labels
    assert metadata.read(str(out)).class_names == tuple(sorted(csv_corpora.BREEDS))
    assert main(["convert", str(corpus.src), str(tmp_path / "again"), "--like", str(out), "--workers", "1"]) == 0
    assert "identical to" in capsys.readouterr().out


def test_a_duplicate_id_is_an_error_before_anything_is_written(corpora, tmp_path, capsys):
    corpus = corpora["cactus"]
    labels = tmp_path / "twice.csv"
    labels.write_text(corpus.labels_csv.read_text(encoding="utf-8-sig") + "00000000.jpg,0\n")
    assert convert_cli(corpus.src, tmp_path / "out", "--labels", labels) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1] == "shardflow convert: error: twice.csv: id '00000000.jpg' is given twice (lines 2 and 27); "
        "each image must have one row"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--id-column", "id"], "--id-column: only with --labels FILE.csv"),
        (["--labels", "x.csv", "--unlabeled"], "drop --unlabeled"),
        (["--labels", "x.csv", "--layout", "folders"], "drop --layout folders"),
    ],
)
def test_label_options_that_cannot_apply_are_refused(kaggle_dir, tmp_path, capsys, flags, message):
    assert convert_cli(kaggle_dir, tmp_path / "out", *flags) == 2
    assert message in capsys.readouterr().err


def test_changed_labels_show_in_diff(corpora, planet_out, tmp_path, capsys):
    corpus = corpora["planet"]
    rows = [line.split(",") for line in corpus.labels_csv.read_text().splitlines()[1:]]
    rows = [[name, "haze water" if name == "train_3" else tags] for name, tags in rows]
    write_csv(tmp_path / "relabelled.csv", ["image_name", "tags"], rows)
    out = tmp_path / "relabelled"
    assert convert_cli(corpus.src, out, "--labels", tmp_path / "relabelled.csv", "--name", "planet") == 0
    assert main(["diff", str(planet_out), str(out)]) == 1
    assert "changed: train_3.jpg" in capsys.readouterr().out
