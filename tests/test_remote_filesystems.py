"""SRC and OUT on a non-local filesystem (gs://, s3://): the conversion goes through Beam's FileSystems, the
read side (metadata, verify, load) through tf.io.gfile."""

from __future__ import annotations

import io
import posixpath
import re
import shutil
import tarfile

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from apache_beam.io.filesystems import FileSystems

from shardflow.beam_jobs import progress
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.beam_jobs.progress import READING, ProgressWriter, read_counts
from shardflow.beam_jobs.sources import SourceError
from shardflow.core import metadata, record_index
from shardflow.pipeline import load
from shardflow.tools.verify import verify
from tests.memory_filesystem import MemoryFileSystem, SlowMemoryFileSystem
from tests.test_convert import records


def test_convert_to_a_remote_filesystem(kaggle_dir, tmp_path):
    out = "memfs://bucket/datasets/pets"
    info = convert(str(kaggle_dir), out, ConvertOptions(name="pets", workers=1))
    assert info.num_records == 60
    names = {path[len(out) + 1 :] for path in MemoryFileSystem.files if path.startswith(out + "/")}
    assert {
        metadata.DATASET_INFO,
        metadata.FEATURES,
        metadata.SHARDFLOW_INFO,
        metadata.REJECTS,
        metadata.DUPLICATES,
    } <= names
    assert not any(name.startswith(metadata.STAGING) for name in names)  # staging cleaned up remotely
    shards = [s.filename for split in info.splits.values() for s in split.shards]
    assert {record_index.index_filename(shard) for shard in shards} <= names
    local = tmp_path / "copy"  # the same bytes, brought home: they verify (indexes too) and load with TFDS
    for name in names:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(MemoryFileSystem.files[f"{out}/{name}"])
    assert verify(str(local)).ok
    builder = tfds.builder_from_directory(str(local))
    assert sum(builder.info.splits[s].num_examples for s in builder.info.splits) == 60
    assert len(list(builder.as_dataset(split="test"))) == builder.info.splits["test"].num_examples


def test_a_runners_workers_report_progress_through_a_remote_out(kaggle_dir, capsys):
    """A runner's workers (not shardflow's local ones) write their counts into OUT's staging folder through Beam's
    filesystems, which the launcher lists and shows: on an object store as on a disk."""
    out = "memfs://bucket/progress/pets"
    convert(str(kaggle_dir), out, ConvertOptions(workers=1), ["--runner", "DirectRunner"])
    err = capsys.readouterr().err
    assert "reading images: 60/60, 0 rejected\n" in err and re.search(r"^writing shards: [1-9] shards$", err, re.M)
    assert not [path for path in MemoryFileSystem.files if path.startswith(f"{out}/{metadata.STAGING}")]


def test_counts_of_many_workers_on_an_object_store_are_read_side_by_side():
    """A job of many workers leaves a counter file per worker thread and stage; read one at a time at an object
    store's 30 ms, 300 of them would take 9 s, and the display would lag the job by as much."""
    folder = "slowmemfs://bucket/progress"
    for _ in range(300):
        ProgressWriter(folder).add()
    assert read_counts(folder) == {READING: (300, 0)}
    assert SlowMemoryFileSystem.most_at_once >= progress.REMOTE_READERS // 2
    FileSystems.delete([folder])


def test_a_remote_dataset_reads_through_tf_gfile(pets_in_shards):
    """TensorFlow's in-memory filesystem (ram://) stands in for gs://: metadata, verify and load read it."""
    kaggle_out = pets_in_shards  # (several shards per split)
    remote = "ram://bucket/datasets/pets"
    for path in kaggle_out.rglob("*"):
        if path.is_file():
            name = path.relative_to(kaggle_out).as_posix()
            tf.io.gfile.makedirs(posixpath.dirname(f"{remote}/{name}"))
            tf.io.gfile.copy(str(path), f"{remote}/{name}", overwrite=True)
    info = metadata.read(remote)
    assert info.num_records == 60 and info.shard_paths("train")[0].startswith(remote + "/")
    assert sorted(tf.io.gfile.glob(f"{remote}/*.tfrecord*")) == sorted(
        path for split in info.splits for path in info.shard_paths(split)
    )
    assert verify(remote).ok
    local = sum(len(labels) for _, labels in load(str(kaggle_out), "train", batch_size=8, image_size=16))
    assert sum(len(labels) for _, labels in load(remote, "train", batch_size=8, image_size=16)) == local
    index = record_index.index_filename(info.split("train").shards[0].filename)
    with tf.io.gfile.GFile(f"{remote}/{index}", "wb") as f:  # the record indexes are checked there too
        f.write(b"0 1\n")
    assert verify(remote).shards[0].problems[0].startswith(f"its record index {index} does not match")


@pytest.mark.slow
def test_convert_from_a_remote_filesystem(folders_dir, tmp_path):
    """A folder, a zip and a tar on the remote filesystem give the records of the local folder."""
    src = "memfs://bucket/raw/flower_photos"
    for path in folders_dir.rglob("*"):
        if path.is_file():
            MemoryFileSystem.files[f"{src}/{path.relative_to(folders_dir).as_posix()}"] = path.read_bytes()
    archive = shutil.make_archive(str(tmp_path / "flower_photos"), "zip", folders_dir.parent, "flower_photos")
    MemoryFileSystem.files[f"{src}.zip"] = open(archive, "rb").read()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as writer:
        writer.add(folders_dir, arcname="flower_photos")
    MemoryFileSystem.files[f"{src}.tar"] = tar.getvalue()
    convert(str(folders_dir), str(tmp_path / "local"), ConvertOptions(workers=1))
    expected = records(tmp_path / "local")
    for source in (src, f"{src}.zip", f"{src}.tar"):
        out = tmp_path / f"out-{source.rsplit('/', 1)[-1]}"
        info = convert(source, str(out), ConvertOptions(workers=1))
        assert info.name == "flower_photos" and info.ignored == ("LICENSE.txt",), source
        assert records(out) == expected, source


def test_a_missing_remote_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        convert("memfs://bucket/nothing-here", str(tmp_path / "out"), ConvertOptions(workers=1))
