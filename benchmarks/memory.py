"""Peak memory of conversion and reading as the dataset grows: it should stay flat, not grow with the file count.

Converts N small JPEGs with `shardflow convert` in a child process (peak RSS of the largest process: the runner
or a worker), then reads one epoch with `load` in another child process (peak RSS). Usage:

    .venv/bin/python benchmarks/memory.py [--sizes 5000,20000,50000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

from common import markdown_table

READ_EPOCH = """
import sys
from shardflow.pipeline import load
for images, labels in load(sys.argv[1], "train", batch_size=64, image_size=32):
    pass
"""


def write_small_jpegs(folder: str, n: int) -> None:
    """n 48x48 JPEGs named like Kaggle's (two classes), quick to write."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    tiles = [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(16)]
    for i in range(n):
        tiles[i % 16].save(os.path.join(folder, f"{('cat', 'dog')[i % 2]}.{i}.jpg"), quality=80)


MEASURE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mb(command: list[str]) -> float:
    """Run `command` under a fresh parent and return the peak resident set size (MB) of its largest process."""
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], check=True, capture_output=True, text=True)
    return int(result.stdout.split()[-1]) / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000,50000", help="image counts, increasing")
    args = parser.parse_args(argv)
    rows = []
    for n in sorted(int(s) for s in args.sizes.split(",")):
        work = tempfile.mkdtemp(prefix="shardflow-memory-")
        try:
            src, out = os.path.join(work, "train"), os.path.join(work, "data")
            print(f"{n} images...", file=sys.stderr)
            write_small_jpegs(src, n)
            convert = peak_rss_mb(
                [
                    sys.executable,
                    "-m",
                    "shardflow.cli",
                    "convert",
                    src,
                    out,
                    "--splits",
                    "train=1",
                    "--shard-size-mb",
                    "16",
                ]
            )
            read = peak_rss_mb([sys.executable, "-c", READ_EPOCH, out])
            rows.append([f"{n:,}", f"{convert:.0f}", f"{read:.0f}"])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown_table(["images", "convert: peak RSS (MB)", "read one epoch: peak RSS (MB)"], rows))


if __name__ == "__main__":
    main()
