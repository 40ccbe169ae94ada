"""Files on the read side: local paths through the standard library, remote ones (gs://, ...) through
`tf.io.gfile`, imported only for them. Reading a dataset needs neither Apache Beam nor, for local metadata,
TensorFlow."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from typing import IO

Opener = Callable[[str], IO[bytes]]  # opens a dataset's file by path: `open_binary`, or Beam's `FileSystems.open`


def is_remote(path: str) -> bool:
    """A path on another filesystem (gs://, s3://, ...) rather than the local disk."""
    return "://" in path


def join(folder: str, name: str) -> str:
    return posixpath.join(folder, name) if is_remote(folder) else os.path.join(folder, name)


def exists(path: str) -> bool:
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def size(path: str) -> int:
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.stat(path).length
    return os.path.getsize(path)


def open_binary(path: str) -> IO[bytes]:
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb")


def read_text(path: str) -> str:
    with open_binary(path) as f:
        return f.read().decode()
