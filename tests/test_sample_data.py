"""`shardflow sample-data`: deterministic, photo-like, and learnable."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shardflow.cli import main
from shardflow.testing.sample_data import write_sample_data
from tests.conftest import photo_subset


def test_kaggle_layout_sizes_and_determinism(tmp_path):
    first = write_sample_data(tmp_path / "a", n=10, seed=3)
    second = write_sample_data(tmp_path / "b", n=10, seed=3)
    assert [p.name for p in first] == sorted([f"cat.{i}.jpg" for i in range(5)] + [f"dog.{i}.jpg" for i in range(5)])
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    for path in first:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert all(200 <= side <= 500 for side in image.size)
    assert len({Image.open(p).size for p in first}) > 1  # varied sizes and aspect ratios


def test_folders_layout_via_cli(tmp_path, capsys):
    assert (
        main(
            [
                "sample-data",
                str(tmp_path / "flowers"),
                "--layout",
                "folders",
                "--n",
                "9",
                "--classes",
                "daisy,roses,tulips",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "flowers").iterdir()) == ["daisy", "roses", "tulips"]
    assert len(list((tmp_path / "flowers" / "roses").glob("*.jpg"))) == 3
    assert "wrote 9 images" in capsys.readouterr().out


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        write_sample_data(tmp_path, n=4, classes=("cat", "cat"))
    with pytest.raises(ValueError, match="layout"):
        write_sample_data(tmp_path, n=4, layout="zip")


@pytest.mark.slow
def test_classes_are_separable_by_a_simple_statistic(sample_photos, tmp_path):
    """Learnable: even a nearest-centroid classifier on tiny edge-orientation features beats chance clearly."""
    paths = sorted(photo_subset(sample_photos, tmp_path / "photos", per_class=100).iterdir())  # 200 photos

    def features(path):
        pixels = np.asarray(Image.open(path).convert("L").resize((64, 64)), dtype=np.float32)
        gx, gy = np.abs(np.diff(pixels, axis=1))[:-1], np.abs(np.diff(pixels, axis=0))[:, :-1]
        angle = np.arctan2(gy, gx + 1e-6)
        hist, _ = np.histogram(angle, bins=8, range=(0, np.pi / 2), weights=gx + gy)
        return hist / (hist.sum() + 1e-6)

    x = np.stack([features(p) for p in paths])
    y = np.array([p.name.startswith("dog") for p in paths])
    train, test = np.arange(len(x)) % 2 == 0, np.arange(len(x)) % 2 == 1
    centroids = np.stack([x[train & (y == c)].mean(axis=0) for c in (False, True)])
    predicted = np.argmin(((x[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == y[test]).mean() > 0.6
