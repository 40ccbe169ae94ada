"""Shared by the benchmark scripts: sample corpora in a scratch folder, and Markdown tables for the README."""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence

from shardflow.sample_data import write_sample_data


@contextlib.contextmanager
def sample_corpus(n: int, layout: str = "folders") -> Iterator[tuple[str, str]]:
    """(scratch folder, folder of n sample JPEGs in it); the scratch folder is deleted afterwards."""
    work = tempfile.mkdtemp(prefix="shardflow-bench-")
    try:
        src = os.path.join(work, "raw")
        print(f"writing {n} sample images...", file=sys.stderr)
        write_sample_data(src, layout=layout, n=n)
        yield work, src
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """First column left-aligned, the others right-aligned; cells already formatted as strings."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(row, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])
