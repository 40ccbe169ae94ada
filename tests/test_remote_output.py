"""OUT on a non-local filesystem (gs://, s3://): everything goes through Beam's FileSystems."""
from __future__ import annotations

import tensorflow_datasets as tfds

from shardflow import metadata
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.verify import verify
from tests.memory_filesystem import MemoryFileSystem


def test_convert_to_a_remote_filesystem(kaggle_dir, tmp_path):
    out = "memfs://bucket/datasets/pets"
    info = convert(str(kaggle_dir), out, ConvertOptions(name="pets", workers=1))
    assert info["num_records"] == 60
    names = {path[len(out) + 1:] for path in MemoryFileSystem.files if path.startswith(out + "/")}
    assert {metadata.DATASET_INFO, metadata.FEATURES, metadata.SHARDFLOW_INFO, metadata.REJECTS} <= names
    assert not any(name.startswith(metadata.STAGING) for name in names)  # staging cleaned up remotely
    assert metadata.read(out).splits["train"]["num_examples"] > 0
    assert verify(out).ok
    local = tmp_path / "copy"  # the same bytes, brought home, load with TFDS
    local.mkdir()
    for name in names:
        (local / name).write_bytes(MemoryFileSystem.files[f"{out}/{name}"])
    builder = tfds.builder_from_directory(str(local))
    assert sum(builder.info.splits[s].num_examples for s in builder.info.splits) == 60
    assert len(list(builder.as_dataset(split="test"))) == builder.info.splits["test"].num_examples
