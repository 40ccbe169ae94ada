"""The one writer of a dataset's metadata: `shardflow.json`, then TFDS's files with `dataset_info.json` last
(the completion mark). Through Beam's filesystems, so OUT may be remote."""
from __future__ import annotations

import os
import tempfile

import tensorflow_datasets as tfds
from apache_beam.io.filesystems import FileSystems

from shardflow import metadata, schema


def shard_template(data_dir: str, name: str, split: str) -> tfds.core.ShardedFileTemplate:
    """TFDS's file naming: NAME-SPLIT.tfrecord-00000-of-000NN."""
    return tfds.core.ShardedFileTemplate(
        data_dir=data_dir, dataset_name=name, split=split, filetype_suffix="tfrecord"
    )


def shard_filename(name: str, split: str, index: int, num_shards: int) -> str:
    return shard_template("/", name, split).sharded_filepath(shard_index=index, num_shards=num_shards).name


def write(data_dir: str, info: metadata.DatasetInfo, description: str) -> None:
    """Write shardflow.json, then the TFDS metadata with dataset_info.json last.

    TFDS writes its files to a local scratch folder; Beam's filesystems copy them, so `data_dir` may be remote.
    """
    with FileSystems.create(FileSystems.join(data_dir, metadata.SHARDFLOW_INFO)) as f:
        f.write(info.to_json().encode())
    with tempfile.TemporaryDirectory(prefix="shardflow-metadata-") as scratch:
        _tfds_info(scratch, info, description).write_to_directory(scratch)
        names = sorted(os.listdir(scratch), key=lambda n: n == metadata.DATASET_INFO)  # dataset_info.json last
        for name in names:
            with open(os.path.join(scratch, name), "rb") as source, \
                    FileSystems.create(FileSystems.join(data_dir, name)) as target:
                target.write(source.read())


def _tfds_info(scratch: str, info: metadata.DatasetInfo, description: str) -> tfds.core.DatasetInfo:
    """What `tfds.folder_dataset.write_metadata` builds, without its listing of the shard files."""
    identity = tfds.core.DatasetIdentity(name=info.name, version=tfds.core.Version("1.0.0"), data_dir=scratch,
                                         module_name="")
    dataset_info = tfds.core.DatasetInfo(
        builder=identity,
        features=info.schema.features,
        description=description,
        supervised_keys=(schema.IMAGE, schema.LABEL),
    )
    dataset_info.set_file_format(tfds.core.file_adapters.FileFormat.TFRECORD)
    dataset_info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(
            name=split.name,
            shard_lengths=[s.num_records for s in split.shards],
            num_bytes=split.num_bytes,
            filename_template=shard_template(scratch, info.name, split.name),
        )
        for split in info.splits.values()
    ]))
    return dataset_info
