"""`shardflow diff OLD NEW`: added, removed and changed images per split and class; unchanged files keep their
split between versions (stable hash splits)."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from shardflow.cli import main
from shardflow.core.messages import display_width, pad
from shardflow.testing.sample_data import write_sample_data
from tests.conftest import encode


@pytest.mark.slow
def test_a_new_version_is_compared_record_by_record(tmp_path, capsys):
    old_src, new_src = tmp_path / "v1", tmp_path / "v2"
    write_sample_data(old_src, n=40, seed=4)
    shutil.copytree(old_src, new_src)
    (new_src / "cat.0.jpg").unlink()
    (new_src / "dog.1.jpg").write_bytes(encode(Image.open(old_src / "dog.1.jpg").rotate(90)))
    shutil.copy(old_src / "cat.2.jpg", new_src / "cat.100.jpg")
    for src, out in ((old_src, "old"), (new_src, "new")):
        assert main(["convert", str(src), str(tmp_path / out), "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "old"), str(tmp_path / "new")]) == 1
    out = capsys.readouterr().out
    assert "1 added, 1 removed, 1 changed, 38 unchanged; 0 file(s) moved to another split" in out
    assert "added: cat.100.jpg" in out and "removed: cat.0.jpg" in out and "changed: dog.1.jpg" in out
    assert main(["diff", str(tmp_path / "old"), str(tmp_path / "new"), "--json"]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert sum(c.get("unchanged", 0) for c in shown["counts"].values()) == 38
    assert main(["diff", str(tmp_path / "old"), str(tmp_path / "old")]) == 0
    assert "0 added, 0 removed, 0 changed, 40 unchanged" in capsys.readouterr().out


@pytest.mark.slow
def test_other_splits_show_as_moved_files(tmp_path, capsys):
    write_sample_data(tmp_path / "src", n=30, seed=6)
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "a"), "--workers", "1"]) == 0
    assert (
        main(
            ["convert", str(tmp_path / "src"), str(tmp_path / "b"), "--splits", "train=0.5,test=0.5", "--workers", "1"]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "0 added, 0 removed, 0 changed, 30 unchanged" in out and "0 file(s) moved" not in out


def test_the_table_stays_aligned_after_wide_class_names(tmp_path, capsys):
    """CJK class names take two terminal columns per character: every row's counts end in the same column."""
    src = tmp_path / "src"
    write_sample_data(src, layout="folders", n=8, classes=["風景", "猫と犬の写真", "cat", "dog"], seed=3)
    assert main(["convert", str(src), str(tmp_path / "a"), "--workers", "1", "--splits", "train=1"]) == 0
    next((src / "cat").iterdir()).unlink()
    assert main(["convert", str(src), str(tmp_path / "b"), "--workers", "1", "--splits", "train=1"]) == 0
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    lines = capsys.readouterr().out.splitlines()
    table = lines[1 : lines.index(next(line for line in lines if line.startswith("  removed:")))]
    assert [row.split()[0] for row in table] == [
        "split/class",
        "train/cat",
        "train/dog",
        "train/猫と犬の写真",
        "train/風景",
    ]
    assert len({display_width(row) for row in table}) == 1, "\n".join(table)


def test_display_width_counts_wide_characters_twice():
    assert display_width("風景") == 4 and display_width("cat") == 3 and display_width("e\u0301") == 1
    assert pad("風景", 6) == "風景  " and pad("cat", 6, ">") == "   cat"
