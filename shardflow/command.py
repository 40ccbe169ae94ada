"""The `shardflow` command's entry point: `shardflow.cli.main`, and a Ctrl-C while that module imports (TensorFlow
Datasets, under a second) ends the command as quietly as one later does."""

from __future__ import annotations

import gc
import os
import signal
import sys
from types import FrameType
from typing import NoReturn

from shardflow.core.messages import INTERRUPTED


def main() -> int:
    starting = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # (not where it is ignored: `cmd &`)
    if starting:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        from shardflow import cli
    finally:
        if starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    code = cli.main()
    gc.freeze()  # the exit then collects none of the modules' objects: 0.3 s less after a conversion
    return code


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> NoReturn:
    """Ctrl-C before the command has begun: there is nothing to undo, so it ends here. (A KeyboardInterrupt would
    not do: raised inside an extension module's import, numpy's for one, it comes out as that module's ImportError.)"""
    print("shardflow: interrupted", file=sys.stderr, flush=True)
    os._exit(INTERRUPTED)
