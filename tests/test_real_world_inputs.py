"""Inputs as real users have them: OS debris, archives made by `tar`, encrypted or truncated archives,
--split-counts beyond the data, option typos, many classes. Each converts for real (FnApiRunner)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from shardflow.beam_jobs.convert import unknown_beam_options
from shardflow.cli import main
from shardflow.core import metadata
from tests.conftest import encode, noise_image
from tests.test_convert import records


def write(root, names, data=None):
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(noise_image(16, 12, seed=i)) if data is None else data)
    return root


@pytest.fixture(scope="module")
def kaggle_with_debris(tmp_path_factory):
    """Kaggle names copied from a Mac: AppleDouble twins, .DS_Store, and a Windows Thumbs.db."""
    root = tmp_path_factory.mktemp("debris") / "train"
    write(root, [f"{c}.{i}.jpg" for c in ("cat", "dog") for i in range(8)])
    write(root, ["._cat.1.jpg", "._dog.3.jpg"], b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    write(root, [".DS_Store", "Thumbs.db"], b"\x00\x00\x00\x01Bud1")
    return root


def test_debris_never_makes_a_class_and_is_listed(kaggle_with_debris, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(kaggle_with_debris), str(out), "--workers", "1"]) == 0
    info = metadata.read(str(out))
    assert info.class_names == ("cat", "dog") and info.num_inputs == 16 == info.num_records
    assert info.debris == (".DS_Store", "._cat.1.jpg", "._dog.3.jpg", "Thumbs.db")
    assert "skipped 4 macOS/Windows system file(s) such as '.DS_Store'" in capsys.readouterr().out


@pytest.mark.slow
def test_a_tgz_made_by_the_tar_command_gives_the_folders_records(kaggle_with_debris, tmp_path):
    archive = tmp_path / "train.tgz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(kaggle_with_debris), "."], check=True)
    assert main(["convert", str(kaggle_with_debris), str(tmp_path / "folder"), "--name", "pets", "--workers", "1"]) == 0
    assert main(["convert", str(archive), str(tmp_path / "tgz"), "--name", "pets", "--workers", "1"]) == 0
    assert records(tmp_path / "tgz") == records(tmp_path / "folder")


def test_an_encrypted_zip_member_is_one_reject(tmp_path):
    if shutil.which("zip") is None:
        pytest.skip("the zip command is needed to write an encrypted zip")
    src = write(tmp_path / "src", [f"{c}.{i}.jpg" for c in ("cat", "dog") for i in range(3)])
    subprocess.run(["zip", "-q", "-P", "secret", str(tmp_path / "pets.zip"), "cat.0.jpg"], cwd=src, check=True)
    subprocess.run(
        [
            "zip",
            "-q",
            str(tmp_path / "pets.zip"),
            *[f"{c}.{i}.jpg" for c in ("cat", "dog") for i in range(3) if (c, i) != ("cat", 0)],
        ],
        cwd=src,
        check=True,
    )
    assert main(["convert", str(tmp_path / "pets.zip"), str(tmp_path / "out"), "--workers", "1"]) == 0
    assert metadata.read_rejects(str(tmp_path / "out")) == [
        {"path": "cat.0.jpg", "reason": "encrypted, password required"}
    ]


def test_a_truncated_tgz_is_one_line(kaggle_with_debris, tmp_path, capsys):
    archive = tmp_path / "train.tgz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(kaggle_with_debris), "."], check=True)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])
    assert main(["convert", str(archive), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"shardflow convert: error: {archive}: damaged or truncated tar archive (")
    assert len(error.splitlines()) == 1


def test_split_counts_beyond_the_data_are_refused_unless_allowed(kaggle_with_debris, tmp_path, capsys):
    asked = ["--split-counts", "train=6,validation=2,test=2", "--workers", "1"]
    assert main(["convert", str(kaggle_with_debris), str(tmp_path / "out"), *asked]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "shardflow convert: error: class 'cat' has 8 inputs but --split-counts train=6,validation=2,test=2 asks "
        "for 10; lower the counts, or pass --split-counts-allow-fewer to take what exists"
    )
    assert not (tmp_path / "out").exists()
    assert main(["convert", str(kaggle_with_debris), str(tmp_path / "out"), *asked, "--split-counts-allow-fewer"]) == 0
    meta = metadata.read(str(tmp_path / "out"))
    assert {name: split.label_counts for name, split in meta.splits.items()} == {
        "train": {"cat": 6, "dog": 6},
        "validation": {"cat": 2, "dog": 2},
    }
    assert meta.warnings == (
        "split 'test' has fewer than the 2 records per class asked for 2 class(es), e.g. 'cat' with 0",
    )


def test_split_counts_beyond_the_valid_images_are_refused_before_the_dataset_is_written(tmp_path, capsys):
    src = write(tmp_path / "src", [f"{c}.{i}.jpg" for c in ("cat", "dog") for i in range(5)])
    (src / "cat.0.jpg").write_bytes(b"")  # two broken cats: 3 valid
    (src / "cat.1.jpg").write_bytes(b"not a jpeg")
    assert main(["convert", str(src), str(tmp_path / "out"), "--split-counts", "train=4", "--workers", "1"]) == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith(
            "shardflow convert: error: class 'cat' has 3 valid images (after rejects) but --split-counts train=4 "
            "asks for 4"
        )
    )
    assert not (tmp_path / "out" / metadata.DATASET_INFO).exists()


@pytest.mark.parametrize(
    "typo, suggestion",
    [
        (["--max_sid", "100"], "--max-side"),
        (["--max-size=100"], "--max-side"),
        (["-q", "80"], None),
        (["stray", "--overwrite"], None),
    ],
)
def test_option_typos_are_refused_before_any_work(kaggle_with_debris, tmp_path, capsys, typo, suggestion):
    assert main(["convert", str(kaggle_with_debris), str(tmp_path / "out"), *typo]) == 2
    error = capsys.readouterr().err
    assert f"unknown option(s) {typo[0].split('=')[0]}" in error and len(error.splitlines()) == 1
    assert "neither a shardflow convert option nor a registered Beam pipeline option" in error
    assert error.rstrip().endswith(f"; did you mean {suggestion}?") if suggestion else "did you mean" not in error
    assert not (tmp_path / "out").exists()


def test_a_beam_option_with_a_value_beam_refuses_is_one_line(kaggle_with_debris, tmp_path, capsys):
    """Beam's own parser refuses it, printing the usage of all its ~190 options before the error: one line instead."""
    argv = ["convert", str(kaggle_with_debris), str(tmp_path / "out"), "--direct_num_workers", "two"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "shardflow convert: error: argument --direct_num_workers: invalid int value: 'two'\n"
    )
    assert not (tmp_path / "out").exists()


def test_registered_beam_options_pass():
    assert (
        unknown_beam_options(
            [
                "--runner",
                "DataflowRunner",
                "--project",
                "P",
                "--region",
                "R",
                "--temp_location",
                "gs://bucket/tmp",
                "--setup_file",
                "./setup.py",
            ]
        )
        == []
    )
    assert (
        unknown_beam_options(
            [
                "--runner=FlinkRunner",
                "--flink_master=localhost:8081",
                "--save_main_session",
                "--experiments",
                "a",
                "--experiments=b",
            ]
        )
        == []
    )


def test_many_classes_are_summarized_and_untrained_ones_warned_about(tmp_path, capsys):
    names = [f"class{c:03d}/{i}.jpg" for c in range(200) for i in range(2)] + ["Cat/0.jpg", "cat/0.jpg"]
    src = write(tmp_path / "src", names)
    (src / "empty").mkdir()
    assert main(["convert", str(src), str(tmp_path / "out"), "--splits", "train=0.5,test=0.5", "--workers", "1"]) == 0
    output = capsys.readouterr().out.splitlines()
    info = metadata.read(str(tmp_path / "out"))
    untrained = [c for c in info.class_names if not info.splits["train"].label_counts.get(c)]
    assert untrained  # 202 classes of 1-2 images split in half: some have no training image
    assert len(output) == 7, output
    assert output[1].startswith("  train ") and "of 202 classes, 0-2 per class" in output[1]
    assert output[3:6] == [
        "warning: classes 'Cat' and 'cat' differ only in case; they are kept as 2 classes (rename or merge the "
        "folders if they are one)",
        "warning: class folder 'empty/' is empty; no class is made for it",
        f"warning: {len(untrained)} class(es) have no training image: {', '.join(untrained[:10])} and "
        f"{len(untrained) - 10} more",
    ]
