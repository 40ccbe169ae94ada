"""The one writer of a dataset's metadata: `shardflow.json`, the dataset card `README.md` and its pictures
(`samples.png`, `duplicates.png`), then TFDS's files with `dataset_info.json` last (the completion mark). Through
Beam's filesystems, so OUT may be remote."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence

import tensorflow_datasets as tfds
from apache_beam.io.filesystems import FileSystems

from shardflow.beam_jobs import dataset_card
from shardflow.core import metadata, pictures, schema


def shard_template(data_dir: str, name: str, split: str) -> tfds.core.ShardedFileTemplate:
    """TFDS's file naming: NAME-SPLIT.tfrecord-00000-of-000NN."""
    return tfds.core.ShardedFileTemplate(data_dir=data_dir, dataset_name=name, split=split, filetype_suffix="tfrecord")


def shard_filename(name: str, split: str, index: int, num_shards: int) -> str:
    return shard_template("/", name, split).sharded_filepath(shard_index=index, num_shards=num_shards).name


def check_version(version: str) -> None:
    """TFDS versions are MAJOR.MINOR.PATCH (e.g. 1.0.0); anything else is refused before any work."""
    try:
        tfds.core.Version(version)
    except ValueError:
        raise ValueError(f"`version` {version!r}: expected MAJOR.MINOR.PATCH, e.g. 1.0.0 (TFDS's format)") from None


def write(
    data_dir: str, info: metadata.DatasetInfo, reject_kinds: Counter[str], groups: Sequence[metadata.DuplicateGroup]
) -> None:
    """Write shardflow.json, the dataset card (with samples and, when there are `groups` of duplicates, their
    picture, drawn from the shards already in `data_dir`), then the TFDS metadata with dataset_info.json last.

    TFDS writes its files to a local scratch folder; Beam's filesystems copy them, so `data_dir` may be remote.
    """
    with FileSystems.create(FileSystems.join(data_dir, metadata.SHARDFLOW_INFO)) as f:
        f.write(info.to_json().encode())
    first = metadata.TRAIN if metadata.TRAIN in info.splits else next(iter(info.splits))
    with FileSystems.create(FileSystems.join(data_dir, dataset_card.SAMPLES)) as f:
        f.write(pictures.class_samples(info, pictures.stored_records(info, [first], FileSystems.open)))
    if groups:
        with FileSystems.create(FileSystems.join(data_dir, dataset_card.DUPLICATES_PICTURE)) as f:
            f.write(pictures.duplicates_picture(info, groups, open_file=FileSystems.open))
    with FileSystems.create(FileSystems.join(data_dir, dataset_card.CARD)) as f:
        f.write(dataset_card.markdown(info, reject_kinds, groups).encode())
    with tempfile.TemporaryDirectory(prefix="shardflow-metadata-") as scratch:
        _tfds_info(scratch, info).write_to_directory(scratch)
        names = sorted(os.listdir(scratch), key=lambda n: n == metadata.DATASET_INFO)  # dataset_info.json last
        for name in names:
            with (
                open(os.path.join(scratch, name), "rb") as source,
                FileSystems.create(FileSystems.join(data_dir, name)) as target,
            ):
                target.write(source.read())


def _tfds_info(scratch: str, info: metadata.DatasetInfo) -> tfds.core.DatasetInfo:
    """What `tfds.folder_dataset.write_metadata` builds, without its listing of the shard files."""
    card = info.card
    identity = tfds.core.DatasetIdentity(
        name=info.name, version=tfds.core.Version(card.version), data_dir=scratch, module_name=""
    )
    dataset_info = tfds.core.DatasetInfo(
        builder=identity,
        features=info.schema.features,
        description=card.description or dataset_card.summary(info),
        homepage=card.homepage or None,
        citation=card.citation or None,
        redistribution_info={"license": card.license} if card.license else None,
        supervised_keys=(schema.IMAGE, schema.LABEL),
    )
    dataset_info.set_file_format(tfds.core.file_adapters.FileFormat.TFRECORD)
    dataset_info.set_splits(
        tfds.core.SplitDict(
            [
                tfds.core.SplitInfo(
                    name=split.name,
                    shard_lengths=[s.num_records for s in split.shards],
                    num_bytes=split.num_bytes,
                    filename_template=shard_template(scratch, info.name, split.name),
                )
                for split in info.splits.values()
            ]
        )
    )
    return dataset_info
