"""Where `convert` called from Python spends its time: seconds from the call to the end of each of Beam's bundles
(the local runner runs one stage at a time) and of the metadata and card, for a few calls in one process.

Beam's `FnApiRunner._execute_bundle` (a private method: this script follows Beam's local runner, not an API) and
shardflow's `metadata_writer.write` and `convert.finalize` are wrapped to note when each starts and ends. A stage
is named by the first of its fused transforms that the job names (`ReadAndPrepare/SpreadInputs`). Usage:

    .venv/bin/python benchmarks/timeline.py SRC [--calls 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from apache_beam.runners.portability.fn_api_runner import fn_runner

from common import markdown_table
from shardflow.beam_jobs import convert as convert_module
from shardflow.beam_jobs import metadata_writer
from shardflow.beam_jobs.convert import ConvertOptions, convert

Event = tuple[str, float, float]  # what, started, ended (seconds from the call)


def noted(
    function: Callable[..., Any], name: Callable[..., str], events: list[Event], start: list[float]
) -> Callable[..., Any]:
    """`function`, noting in `events` when each call starts and ends (`name` of its arguments)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter() - start[0]
        try:
            return function(*args, **kwargs)
        finally:
            events.append((name(*args, **kwargs), began, time.perf_counter() - start[0]))

    return wrapped


def stage_name(_runner: Any, _context: Any, bundle: Any, _input: Any) -> str:
    """The first of a fused stage's transforms that the job names (`ReadAndPrepare/SpreadInputs`)."""
    named = re.findall(r"([A-Z][A-Za-z]*)[-/]([A-Z][A-Za-z]*)", bundle.stage.name)
    return next((f"{outer}/{inner}" for outer, inner in named if outer != "PCollection"), bundle.stage.name[:40])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    events: list[Event] = []
    start = [0.0]
    fn_runner.FnApiRunner._execute_bundle = noted(fn_runner.FnApiRunner._execute_bundle, stage_name, events, start)
    metadata_writer.write = noted(metadata_writer.write, lambda *_: "metadata and the card", events, start)
    convert_module.finalize = noted(convert_module.finalize, lambda *_: "finalize (all of it)", events, start)
    totals, calls = [], []
    out = tempfile.mkdtemp(prefix="shardflow-timeline-")
    try:
        for _ in range(args.calls):
            events.clear()
            shutil.rmtree(out, ignore_errors=True)
            start[0] = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                convert(args.src, out, ConvertOptions(workers=args.workers, overwrite=True))
            totals.append(time.perf_counter() - start[0])
            calls.append(list(events))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if len({tuple(name for name, _, _ in call) for call in calls}) > 1:  # (Beam ran other bundles in a call)
        calls, totals = calls[:1], totals[:1]
    rows = [
        [name] + [f"{call[i][1]:.2f}-{call[i][2]:.2f} ({call[i][2] - call[i][1]:.2f})" for call in calls]
        for i, (name, _, _) in enumerate(calls[0])
    ]
    rows.append(["returned"] + [f"{total:.2f}" for total in totals])
    print(
        markdown_table(
            ["step: start-end (length), seconds from the call", *(f"call {i + 1}" for i in range(len(calls)))], rows
        )
    )


if __name__ == "__main__":
    main()
