"""Source detection and listing: layouts, labels, wrappers, archives, IDX, and the user's mistakes."""
from __future__ import annotations

import shutil
import tarfile
import zipfile

import numpy as np
import pytest

from shardflow.beam_jobs.sources import SourceError, list_source
from tests.conftest import encode, noise_image, write_idx


def files(listing):
    return sorted((f.path, f.label, f.split) for task in listing.tasks for f in task.files)


def put(root, relative, data=None):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(noise_image(8, 8)) if data is None else data)


def test_kaggle_layout(tmp_path):
    for name in ("cat.0.jpg", "cat.1.jpg", "dog.0.jpg"):
        put(tmp_path, name)
    listing = list_source(str(tmp_path))
    assert listing.layout == "kaggle" and listing.class_names == ["cat", "dog"]
    assert files(listing) == [("cat.0.jpg", 0, None), ("cat.1.jpg", 0, None), ("dog.0.jpg", 1, None)]


def test_class_folders_with_wrapper_and_license(tmp_path):
    for name in ("PetImages/Dog/0.jpg", "PetImages/Cat/0.jpg", "PetImages/Cat/Thumbs.db"):
        put(tmp_path, name)
    (tmp_path / "readme.txt").write_text("hi")
    listing = list_source(str(tmp_path))
    assert listing.layout == "folders" and listing.class_names == ["Cat", "Dog"]
    assert files(listing) == [("Cat/0.jpg", 0, None), ("Cat/Thumbs.db", 0, None), ("Dog/0.jpg", 1, None)]
    assert listing.ignored == ["readme.txt"]


def test_class_names_option_sets_the_order(tmp_path):
    for name in ("a/0.jpg", "b/0.jpg"):
        put(tmp_path, name)
    assert list_source(str(tmp_path), class_names=("b", "a")).class_names == ["b", "a"]
    with pytest.raises(SourceError, match="not in --class-names"):
        list_source(str(tmp_path), class_names=("a", "c"))


def test_existing_split_folders_are_kept(tmp_path):
    for name in ("train/cat/0.jpg", "train/dog/0.jpg", "validation/cat/1.jpg", "test/dog/1.jpg"):
        put(tmp_path, name)
    listing = list_source(str(tmp_path))
    assert listing.fixed_splits
    assert files(listing) == [("test/dog/1.jpg", 1, "test"), ("train/cat/0.jpg", 0, "train"),
                              ("train/dog/0.jpg", 1, "train"), ("validation/cat/1.jpg", 0, "validation")]


def test_unlabeled(tmp_path):
    for name in ("1.jpg", "2.jpg"):
        put(tmp_path, name)
    with pytest.raises(SourceError, match="--unlabeled"):
        list_source(str(tmp_path))
    listing = list_source(str(tmp_path), unlabeled=True)
    assert listing.class_names == [] and {f[1] for f in files(listing)} == {-1}


def test_zip_and_tar_list_the_same_files_as_the_folder(tmp_path):
    src = tmp_path / "src"
    for name in ("flower_photos/daisy/0.jpg", "flower_photos/roses/0.jpg", "flower_photos/LICENSE.txt"):
        put(src, name)
    shutil.make_archive(str(tmp_path / "flowers"), "zip", src)
    for name, mode in (("flowers.tgz", "w:gz"), ("flowers.tar", "w")):
        with tarfile.open(tmp_path / name, mode) as tar:
            tar.add(src / "flower_photos", arcname="flower_photos")
    expected = files(list_source(str(src)))
    for name in ("flowers.zip", "flowers.tgz", "flowers.tar"):
        assert files(list_source(str(tmp_path / name))) == expected, name
    assert list_source(str(tmp_path / "flowers.tgz")).tasks[0].kind == "tar-stream"
    assert list_source(str(tmp_path / "flowers.tar")).tasks[0].kind == "tar"  # read by seeking to each member


def test_unsafe_archive_members_are_rejected(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("cat.0.jpg", encode(noise_image(8, 8)))
        zf.writestr("dog.0.jpg", encode(noise_image(8, 8)))
        zf.writestr("../dog.1.jpg", encode(noise_image(8, 8)))
    listing = list_source(str(tmp_path / "evil.zip"))
    assert listing.rejects == [("../dog.1.jpg", "unsafe archive member path (absolute or containing '..')")]
    assert listing.num_inputs == 3


def test_idx_pairs(tmp_path):
    write_idx(tmp_path, "train", np.zeros((5, 28, 28)), np.arange(5), gz=True)
    write_idx(tmp_path, "t10k", np.zeros((3, 28, 28)), np.arange(3), gz=False)
    listing = list_source(str(tmp_path))
    assert listing.layout == "idx" and listing.default_channels == 1
    assert listing.class_names == ["0", "1", "2", "3", "4"]
    assert [f[2] for f in files(listing)].count("test") == 3


@pytest.mark.parametrize(
    "names, message",
    [
        ((), "empty"),
        (("cat.0.jpg", "cat.1.jpg"), "only one class"),
        (("cat/0.jpg", "dog/0.jpg", "stray.jpg"), "mixed"),
    ],
)
def test_user_mistakes(tmp_path, names, message):
    for name in names:
        put(tmp_path, name)
    with pytest.raises(SourceError, match=message):
        list_source(str(tmp_path))


def test_missing_source_and_unknown_layout(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list_source(str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="unknown layout"):
        list_source(str(tmp_path), layout="csv")
