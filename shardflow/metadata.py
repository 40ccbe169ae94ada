"""A converted dataset's metadata: TFDS's `dataset_info.json` + `features.json`, and our `shardflow.json`.

`dataset_info.json` is written last: a folder without it (an interrupted run) is never taken as a dataset,
by TFDS or by `read`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable
from typing import Any

import tensorflow_datasets as tfds
from apache_beam.io.filesystems import FileSystems

from shardflow import schema

DATASET_INFO = "dataset_info.json"
FEATURES = "features.json"
SHARDFLOW_INFO = "shardflow.json"
REJECTS = "rejects.jsonl"
STAGING = ".shardflow-staging"
FORMAT_VERSION = 1
SIZE_BINS = (64, 128, 256, 512, 1024, 2048)  # histogram of the longer side: <64, 64-127, ..., >=2048


class DatasetError(ValueError):
    """A folder that is not a (complete) shardflow dataset, or a split it does not have."""


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """What a reader needs to know about a converted dataset."""

    data_dir: str
    name: str
    class_names: list[str]
    channels: int
    image_format: str
    splits: dict[str, dict[str, Any]]  # num_examples, shards [{filename, num_records, num_bytes, sha256}], ...
    info: dict[str, Any]  # the whole of shardflow.json

    @property
    def encoding(self) -> str:
        return schema.stored_encoding(self.image_format)

    def split(self, name: str) -> dict[str, Any]:
        if name not in self.splits:
            raise DatasetError(f"{self.data_dir}: no split {name!r}; it has {', '.join(self.splits) or 'none'}")
        return self.splits[name]

    def shard_paths(self, split: str) -> list[str]:
        return [FileSystems.join(self.data_dir, s["filename"]) for s in self.split(split)["shards"]]


def shard_template(data_dir: str, name: str, split: str) -> tfds.core.ShardedFileTemplate:
    """TFDS's file naming: NAME-SPLIT.tfrecord-00000-of-000NN."""
    return tfds.core.ShardedFileTemplate(
        data_dir=data_dir, dataset_name=name, split=split, filetype_suffix="tfrecord"
    )


def shard_filename(name: str, split: str, index: int, num_shards: int) -> str:
    return shard_template("/", name, split).sharded_filepath(shard_index=index, num_shards=num_shards).name


def write(data_dir: str, info: dict[str, Any], description: str) -> None:
    """Write shardflow.json, then the TFDS metadata with dataset_info.json last (the completion mark).

    TFDS writes its files to a local scratch folder; Beam's filesystems copy them, so `data_dir` may be remote.
    """
    with FileSystems.create(FileSystems.join(data_dir, SHARDFLOW_INFO)) as f:
        f.write(json.dumps(info, indent=1, sort_keys=True).encode())
    with tempfile.TemporaryDirectory(prefix="shardflow-metadata-") as scratch:
        _tfds_info(scratch, info, description).write_to_directory(scratch)
        names = sorted(os.listdir(scratch), key=lambda n: n == DATASET_INFO)  # dataset_info.json last
        for name in names:
            with open(os.path.join(scratch, name), "rb") as source, \
                    FileSystems.create(FileSystems.join(data_dir, name)) as target:
                target.write(source.read())


def _tfds_info(scratch: str, info: dict[str, Any], description: str) -> tfds.core.DatasetInfo:
    """What `tfds.folder_dataset.write_metadata` builds, without its listing of the shard files."""
    identity = tfds.core.DatasetIdentity(name=info["name"], version=tfds.core.Version("1.0.0"), data_dir=scratch,
                                         module_name="")
    dataset_info = tfds.core.DatasetInfo(
        builder=identity,
        features=schema.features(info["class_names"], info["channels"], info["image_format"]),
        description=description,
        supervised_keys=(schema.IMAGE, schema.LABEL),
    )
    dataset_info.set_file_format(tfds.core.file_adapters.FileFormat.TFRECORD)
    dataset_info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(
            name=split,
            shard_lengths=[s["num_records"] for s in stats["shards"]],
            num_bytes=stats["num_bytes"],
            filename_template=shard_template(scratch, info["name"], split),
        )
        for split, stats in info["splits"].items()
    ]))
    return dataset_info


def read(data_dir: str) -> DatasetMetadata:
    """The metadata of a finished dataset; `DatasetError` naming the folder if it is not one."""
    info_path = FileSystems.join(data_dir, SHARDFLOW_INFO)
    if not FileSystems.exists(data_dir):
        raise DatasetError(f"{data_dir}: no such dataset directory")
    if not FileSystems.exists(FileSystems.join(data_dir, DATASET_INFO)):
        if FileSystems.exists(FileSystems.join(data_dir, STAGING)) or FileSystems.exists(info_path):
            raise DatasetError(
                f"{data_dir}: incomplete dataset (the conversion did not finish); "
                "run `shardflow convert ... --overwrite` again"
            )
        raise DatasetError(f"{data_dir}: not a shardflow dataset (no {DATASET_INFO}); create one with `shardflow convert`")
    if not FileSystems.exists(info_path):
        raise DatasetError(f"{data_dir}: a TFDS dataset, but not written by shardflow (no {SHARDFLOW_INFO})")
    with FileSystems.open(info_path) as f:
        info = json.loads(f.read())
    return DatasetMetadata(
        data_dir=data_dir,
        name=info["name"],
        class_names=info["class_names"],
        channels=info["channels"],
        image_format=info["image_format"],
        splits={name: info["splits"][name] for name in split_names(info["splits"])},
        info=info,
    )


def read_rejects(data_dir: str) -> list[dict[str, str]]:
    """The rejected inputs of a dataset, as written to rejects.jsonl."""
    path = FileSystems.join(data_dir, REJECTS)
    with FileSystems.open(path) as f:
        return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]


def is_dataset_dir(path: str) -> bool:
    """Whether `path` holds a shardflow dataset, finished or not (so --overwrite may delete it)."""
    return any(os.path.exists(os.path.join(path, n)) for n in (DATASET_INFO, SHARDFLOW_INFO, STAGING))


def split_names(names: Iterable[str]) -> list[str]:
    """Splits in reading order: train, validation, test, then any others."""
    order = {"train": 0, "validation": 1, "test": 2}
    return sorted(names, key=lambda n: (order.get(n, 3), n))
