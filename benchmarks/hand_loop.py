"""The loop users write today to turn class folders of images into TFRecords, as a script (no shardflow): validate
each file by decoding it with PIL, write a `tf.train.Example` per image with one `tf.io.TFRecordWriter` per split
(80/10/10 by a hash of the path). `benchmarks/convert.py` times it as a command beside `shardflow convert`, each
paying its own imports; its in-process loop uses `record` too.

    .venv/bin/python benchmarks/hand_loop.py SRC OUT
"""

from __future__ import annotations

import io
import os
import sys
import zlib

import tensorflow as tf
from PIL import Image


def record(path: str, label: int, data: bytes) -> bytes | None:
    """A serialized `tf.train.Example` of one file (a non-JPEG re-encoded as one); None when PIL cannot decode it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.format != "JPEG" or image.mode != "RGB":
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, "JPEG", quality=95)
                data = buffer.getvalue()
    except Exception:
        return None
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()])),
            }
        )
    ).SerializeToString()


def main(src: str, out: str) -> int:
    """Every file of SRC's class folders as a record in OUT's train/validation/test files; returns the records."""
    os.makedirs(out, exist_ok=True)
    writers = {
        split: tf.io.TFRecordWriter(os.path.join(out, f"{split}.tfrecord")) for split in ("train", "validation", "test")
    }
    classes = sorted(name for name in os.listdir(src) if os.path.isdir(os.path.join(src, name)))
    records = 0
    for label, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(src, name))):
            path = f"{name}/{file}"
            with open(os.path.join(src, path), "rb") as f:
                serialized = record(path, label, f.read())
            if serialized is not None:
                bucket = zlib.crc32(path.encode()) % 10
                writers["train" if bucket < 8 else "validation" if bucket < 9 else "test"].write(serialized)
                records += 1
    for writer in writers.values():
        writer.close()
    return records


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} SRC OUT")
    print(main(*sys.argv[1:]))
