"""Source detection and listing: layouts, labels, wrappers, archives, IDX, and the user's mistakes."""

from __future__ import annotations

import gzip
import mmap
import pathlib
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile

import numpy as np
import pytest

from shardflow.beam_jobs import sources
from shardflow.beam_jobs.sources import SourceError, list_source, stage_idx
from tests.conftest import encode, noise_image, write_idx
from tests.memory_filesystem import MemoryFileSystem


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
    assert files(listing) == [("Cat/0.jpg", 0, None), ("Dog/0.jpg", 1, None)]
    assert listing.ignored == ["readme.txt"] and listing.debris == ["PetImages/Cat/Thumbs.db"]


def test_class_names_option_sets_the_order(tmp_path):
    for name in ("a/0.jpg", "b/0.jpg"):
        put(tmp_path, name)
    assert list_source(str(tmp_path), class_names=("b", "a")).class_names == ["b", "a"]
    with pytest.raises(SourceError, match="not in `class_names`"):
        list_source(str(tmp_path), class_names=("a", "c"))


def test_existing_split_folders_are_kept(tmp_path):
    for name in ("train/cat/0.jpg", "train/dog/0.jpg", "validation/cat/1.jpg", "test/dog/1.jpg"):
        put(tmp_path, name)
    listing = list_source(str(tmp_path))
    assert listing.fixed_splits
    assert files(listing) == [
        ("test/dog/1.jpg", 1, "test"),
        ("train/cat/0.jpg", 0, "train"),
        ("train/dog/0.jpg", 1, "train"),
        ("validation/cat/1.jpg", 0, "validation"),
    ]


def test_unlabeled(tmp_path):
    for name in ("1.jpg", "2.jpg"):
        put(tmp_path, name)
    with pytest.raises(SourceError, match="`unlabeled`"):
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


def buffer_under(array: np.ndarray) -> object:
    """What an array's memory belongs to, through its views."""
    while isinstance(array, np.ndarray):
        array = array.base
    return array.obj if isinstance(array, memoryview) else array


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_are_mapped_not_loaded_and_truncation_is_one_line(tmp_path, gz):
    """Workers index a memory map of the images file (a gzipped one decompressed once into the staging
    folder), never a whole array; a truncated file is refused naming it, before any worker starts."""
    digits = np.arange(6 * 28 * 28).reshape(6, 28, 28) % 251
    (tmp_path / "src").mkdir()
    write_idx(tmp_path / "src", "train", digits, np.arange(6), gz=gz)
    listing = list_source(str(tmp_path / "src"))
    tasks = stage_idx(listing.tasks, str(tmp_path / "staging"))
    assert (tasks[0].container != listing.tasks[0].container) == gz
    read = list(tasks[0].read())
    assert all(isinstance(buffer_under(pixels), mmap.mmap) for _, pixels in read)
    assert np.array_equal(np.stack([pixels for _, pixels in read]), digits)
    images = tmp_path / "src" / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    data = gzip.decompress(images.read_bytes()) if gz else images.read_bytes()
    images.write_bytes((gzip.compress if gz else bytes)(data[:-100]))
    with pytest.raises(SourceError, match=f"{images}: truncated IDX file"):
        stage_idx(list_source(str(tmp_path / "src")).tasks, str(tmp_path / "staging2"))


def test_a_remote_idx_file_is_read_from_a_local_copy_that_leaves_nothing_behind(tmp_path, monkeypatch):
    """An IDX images file on an object store (here `memfs://`, as gs:// would be) is copied once per worker to a
    local temporary file, mapped, and the copy's name removed at once: the pixels are the file's, and no copy is
    left on the worker's disk."""
    digits = np.arange(2500 * 28 * 28).reshape(2500, 28, 28) % 253
    write_idx(tmp_path, "train", digits, np.arange(2500) % 10, gz=False)
    src = f"memfs://bucket/{tmp_path.name}/mnist"
    for path in tmp_path.glob("train-*"):
        MemoryFileSystem.files[f"{src}/{path.name}"] = path.read_bytes()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    tasks = list_source(src).tasks
    assert len(tasks) == 3 and all(task.container == f"{src}/train-images-idx3-ubyte" for task in tasks)
    assert np.array_equal(np.stack([pixels for task in tasks for _, pixels in task.read()]), digits)
    assert list((tmp_path / "tmp").iterdir()) == []


def resident_file_kib() -> int:
    """This process's resident pages of files (mapped files included), in KiB: Linux's RssFile."""
    status = pathlib.Path("/proc/self/status").read_text()
    return int(re.search(r"^RssFile:\s+(\d+) kB", status, re.M).group(1))


def test_a_worker_that_reads_a_whole_idx_file_holds_no_more_of_it_than_a_task(tmp_path):
    """A mapped file's pages count in a process's resident memory as they are read: without giving each task's
    pages back, a worker that read a whole IDX file of a million 28x28 images would hold 784 MB of it."""
    write_idx(tmp_path, "train", np.ones((50_000, 28, 28)), np.zeros(50_000), gz=False)  # 39,200 KB of pixels
    tasks = list_source(str(tmp_path)).tasks
    before = resident_file_kib()
    assert sum(int(pixels.sum()) for task in tasks for _, pixels in task.read()) == 50_000 * 28 * 28
    assert resident_file_kib() - before < 5_000


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


DEBRIS = (
    "._cat.0.jpg",
    ".DS_Store",
    "__MACOSX/._dog.0.jpg",
    "__MACOSX/cat.9.jpg",
    "Thumbs.db",
    "desktop.ini",
    ".Spotlight-V100/store.db",
    "$RECYCLE.BIN/dog.7.jpg",
    ".gitkeep",
)


def test_macos_and_windows_debris_is_skipped_and_listed_in_folders_zips_and_tars(tmp_path):
    src = tmp_path / "src"
    for name in ("cat.0.jpg", "dog.0.jpg", "cat.1.jpg"):
        put(src, name)
    for name in DEBRIS:
        put(src, name, b"\x00\x05\x16\x07AppleDouble" if "._" in name else None)
    shutil.make_archive(str(tmp_path / "kaggle"), "zip", src)
    with tarfile.open(tmp_path / "kaggle.tgz", "w:gz") as tar:
        tar.add(src, arcname=".")
    subprocess.run(["tar", "cf", str(tmp_path / "kaggle.tar"), "-C", str(src), "."], check=True)
    for source in (src, tmp_path / "kaggle.zip", tmp_path / "kaggle.tgz", tmp_path / "kaggle.tar"):
        listing = list_source(str(source))
        assert listing.class_names == ["cat", "dog"], source  # no phantom class '' from ._cat.0.jpg
        assert files(listing) == [("cat.0.jpg", 0, None), ("cat.1.jpg", 0, None), ("dog.0.jpg", 1, None)], source
        assert listing.debris == sorted(DEBRIS) and listing.num_inputs == 3, source


@pytest.mark.parametrize("command", [["tar", "czf"], ["tar", "cf"], ["tar", "cjf"]])
def test_tars_made_by_the_tar_command_list_like_the_folder(tmp_path, command):
    src = tmp_path / "src"
    for name in ("daisy/0.jpg", "roses/0.jpg", "roses/1.jpg"):
        put(src, name)
    archive = tmp_path / "flowers.tar"
    subprocess.run([*command, str(archive), "-C", str(src), "."], check=True)  # members ./daisy/0.jpg and ./
    listing = list_source(str(archive))
    assert files(listing) == files(list_source(str(src))) and listing.warnings == []


def test_encrypted_zip_members_are_rejects(tmp_path):
    src = tmp_path / "src"
    for name in ("cat.0.jpg", "dog.0.jpg", "dog.1.jpg"):
        put(src, name)
    if shutil.which("zip") is None:
        pytest.skip("the zip command is needed to write an encrypted zip")
    subprocess.run(["zip", "-q", "-P", "secret", str(tmp_path / "locked.zip"), "dog.1.jpg"], cwd=src, check=True)
    subprocess.run(["zip", "-q", str(tmp_path / "locked.zip"), "cat.0.jpg", "dog.0.jpg"], cwd=src, check=True)
    listing = list_source(str(tmp_path / "locked.zip"))
    assert listing.rejects == [("dog.1.jpg", "encrypted, password required")]
    assert files(listing) == [("cat.0.jpg", 0, None), ("dog.0.jpg", 1, None)] and listing.num_inputs == 3


@pytest.mark.parametrize("name, kind", [("x.zip", ".zip"), ("x.tar", "tar"), ("x.tgz", "tar"), ("x.tar.gz", "tar")])
def test_truncated_archives_are_named_damaged(tmp_path, name, kind):
    src = tmp_path / "src"
    for i in range(6):
        put(src, f"{('cat', 'dog')[i % 2]}.{i}.jpg", encode(noise_image(64, 64, seed=i)))
    whole = tmp_path / ("whole" + name[1:])
    if kind == ".zip":
        shutil.make_archive(str(whole)[:-4], "zip", src)
    else:
        subprocess.run(["tar", "czf" if name.endswith("gz") else "cf", str(whole), "-C", str(src), "."], check=True)
    data = whole.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=rf"x\.(zip|tar|tgz|tar\.gz): damaged or truncated {kind}"):
        list_source(str(tmp_path / name))


def test_case_twins_and_empty_class_folders_are_warned_about(tmp_path):
    for name in ("Cat/0.jpg", "cat/1.jpg", "dog/0.jpg"):
        put(tmp_path, name)
    (tmp_path / "bird").mkdir()
    listing = list_source(str(tmp_path))
    assert listing.class_names == ["Cat", "cat", "dog"]
    assert listing.warnings == [
        "classes 'Cat' and 'cat' differ only in case; they are kept as 2 classes (rename or merge the folders "
        "if they are one)",
        "class folder 'bird/' is empty; no class is made for it",
    ]


@pytest.mark.skipif(not pathlib.Path("/proc/self/cmdline").exists(), reason="needs Linux's /proc")
def test_a_local_input_is_read_whole_even_when_its_size_is_not_what_fstat_said(tmp_path):
    """A folder's files are read with one read of the size `fstat` gives and a byte more; a file whose size differs
    (one that grew since, or a kernel file that says 0 bytes) is read on to its end, an empty one is empty."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(np.random.default_rng(0).bytes(300_000))
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert sources._read_bytes(str(photo)) == photo.read_bytes()
    assert sources._read_bytes(str(tmp_path / "empty.jpg")) == b""
    kernel = pathlib.Path("/proc/self/cmdline")  # (fstat: 0 bytes)
    assert kernel.stat().st_size == 0
    assert sources._read_bytes(str(kernel)) == kernel.read_bytes() != b""
    with pytest.raises(IsADirectoryError):
        sources._read_bytes(str(tmp_path))
