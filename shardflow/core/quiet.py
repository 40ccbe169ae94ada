"""TensorFlow (and Beam) without start-up chatter on the user's terminal; the CLI, an application, asks for it.

TF_CPP_MIN_LOG_LEVEL=2 promises to hide INFO and WARNING lines, but since TF 2.19 the start-up lines (oneDNN, CUDA
probing) ignore it (tensorflow/tensorflow#100442). On a machine without a GPU driver, CUDA-built TensorFlow also
prints "failed call to cuInit" as an error line; that only means "no GPU", which the commands that care say in
words. Every other line, errors included, still reaches the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

CHATTER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IW]\d{4} "  # INFO and WARNING lines
    r"|E\d{4} .*failed call to cuInit)"
)  # "no GPU driver", said as an error


def start_tensorflow() -> None:
    """Import TensorFlow and probe its devices with the start-up chatter filtered out (when TF_CPP_MIN_LOG_LEVEL
    asks for quiet; with 0, or unset, everything is shown)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") not in ("1", "2", "3"):
        return
    with stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()


@contextlib.contextmanager
def stderr_filtered() -> Iterator[None]:
    """Capture file descriptor 2 (C++ code writes there directly), then pass on the lines that are not chatter."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            os.write(2, b"".join(_kept(captured)))


def forward_filtered(stream: IO[bytes]) -> None:
    """Copy a child process's stderr pipe to ours, line by line, without the chatter (in a daemon thread)."""

    def copy() -> None:
        for line in _kept(stream):
            os.write(2, line)

    threading.Thread(target=copy, daemon=True).start()


def _kept(lines: IO[bytes]) -> Iterator[bytes]:
    return (line for line in lines if not CHATTER.match(line.decode("utf-8", "replace")))


class _OptionalGcpClientsMissing(logging.Filter):
    """Beam's filesystem import warns that BigQuery's optional apitools client is missing; we never use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def quiet_beam_imports() -> None:
    """Keep Beam's warning about optional Google Cloud clients off the terminal (a root-logger filter)."""
    logging.getLogger().addFilter(_OptionalGcpClientsMissing())
