"""The `shardflow` command's entry point: `shardflow.cli.main`, and a Ctrl-C while that module imports (TensorFlow
Datasets, under a second) ends the command as quietly as one later does."""

from __future__ import annotations

import sys

from shardflow.core.messages import INTERRUPTED


def main() -> int:
    try:
        from shardflow import cli
    except KeyboardInterrupt:
        print("shardflow: interrupted", file=sys.stderr)
        return INTERRUPTED
    return cli.main()
