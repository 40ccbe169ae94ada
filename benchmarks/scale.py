"""The conversion as the dataset grows: each process's peak memory (the launcher, which locally is also Beam's
runner, every worker, and the fork server that forks them: peak RSS, and peak anonymous memory, which leaves out
mapped files such as the IDX images and the libraries) and seconds per image, for distinct small images in class
folders and in IDX files. A job whose stages are distributed keeps every process's peak flat as the image count
grows tenfold. Then `shardflow verify` of each dataset beside its ceiling: the same shards read with both CRCs and
SHA-256, then parsed and decoded in parallel batches by tf.data.

The sources are written once into `--cache` (default /tmp/shardflow-scale) and reused by later runs: 32x32
JPEGs of smooth random colour fields in 10 class folders, and IDX files of 28x28 images (like MNIST's). Usage:

    .venv/bin/python benchmarks/scale.py [--sizes 60000,600000] [--sources folders,idx] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
from PIL import Image

from common import markdown_table
from shardflow.beam_jobs.fork_server import FORK_SERVER

CLASSES = 10
SIDE = 32
IDX_SIDE = 28


def _smooth_images(seed: int, n: int, side: int, channels: int) -> np.ndarray:
    """n distinct uint8 images: random 4x4 colour fields scaled up smoothly, plus a little noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4, channels), dtype=np.uint8)
    images = np.empty((n, side, side, channels), dtype=np.uint8)
    for i in range(n):
        mode = "RGB" if channels == 3 else "L"
        field = Image.fromarray(coarse[i] if channels == 3 else coarse[i, ..., 0], mode).resize(
            (side, side), Image.Resampling.BICUBIC
        )
        images[i] = np.asarray(field).reshape(side, side, channels)
    return np.clip(images.astype(np.int16) + rng.integers(-8, 9, images.shape), 0, 255).astype(np.uint8)


def _write_folder_part(args: tuple[str, int, int]) -> None:
    folder, start, stop = args
    images = _smooth_images(start, stop - start, SIDE, 3)
    for i, image in zip(range(start, stop), images):
        Image.fromarray(image).save(os.path.join(folder, f"class{i % CLASSES}", f"{i:07d}.jpg"), quality=90)


def class_folders(cache: str, n: int) -> str:
    """n distinct 32x32 JPEGs in 10 class folders (written once)."""
    folder = os.path.join(cache, f"folders-{n}")
    if not os.path.exists(os.path.join(folder, ".complete")):
        shutil.rmtree(folder, ignore_errors=True)
        for c in range(CLASSES):
            os.makedirs(os.path.join(folder, f"class{c}"))
        print(f"writing {n:,} JPEGs into {folder}...", file=sys.stderr)
        step = 10_000
        with multiprocessing.Pool() as pool:
            pool.map(_write_folder_part, [(folder, s, min(n, s + step)) for s in range(0, n, step)])
        open(os.path.join(folder, ".complete"), "w").close()
    return folder


def idx_files(cache: str, n: int) -> str:
    """n distinct 28x28 grayscale images and their labels as an uncompressed IDX pair (written once)."""
    folder = os.path.join(cache, f"idx-{n}")
    if not os.path.exists(os.path.join(folder, ".complete")):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        print(f"writing {n:,} IDX images into {folder}...", file=sys.stderr)
        with open(os.path.join(folder, "train-images-idx3-ubyte"), "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, IDX_SIDE, IDX_SIDE)))
            for start in range(0, n, 50_000):
                f.write(_smooth_images(start, min(n, start + 50_000) - start, IDX_SIDE, 1).tobytes())
        with open(os.path.join(folder, "train-labels-idx1-ubyte"), "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + (np.arange(n) % CLASSES).astype(np.uint8).tobytes())
        open(os.path.join(folder, ".complete"), "w").close()
    return folder


def _memory(pid: int) -> tuple[int, int]:
    """A process's peak resident set size so far (VmHWM) and its anonymous memory now (RssAnon: what it
    allocated, without the pages of mapped files and libraries), in bytes; zeros once it is gone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "RssAnon"):
                    fields[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return fields.get("VmHWM", 0), fields.get("RssAnon", 0)


def convert_measured(
    src: str, out: str, workers: int
) -> tuple[float, tuple[int, int], list[tuple[int, int]], tuple[int, int]]:
    """Run `shardflow convert` and sample every process of it: (seconds, the launcher's (peak RSS, peak anonymous
    memory), each Python worker's, largest first, the fork server's (the workers' parent; (0, 0) if none)).
    Anonymous memory is sampled every 0.2 s."""
    command = [sys.executable, "-m", "shardflow.cli", "convert", src, out, "--workers", str(workers)]
    started = time.perf_counter()
    log = tempfile.TemporaryFile()  # not a pipe: nobody reads it until the end, and a full pipe blocks the job
    launcher = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    peaks: dict[int, tuple[int, int]] = {}
    servers: set[int] = set()
    while launcher.poll() is None:
        try:
            children = launcher.children(recursive=True)
        except psutil.Error:
            children = []
        for process in [launcher, *children]:
            try:
                if process.pid == launcher.pid or process.name().startswith("python"):
                    # The fork server is the launcher's child; its workers, its children, have its command line.
                    if process.ppid() == launcher.pid and FORK_SERVER in process.cmdline():
                        servers.add(process.pid)
                    rss, anonymous = _memory(process.pid)
                    before = peaks.get(process.pid, (0, 0))
                    peaks[process.pid] = (max(before[0], rss), max(before[1], anonymous))
            except psutil.Error:
                pass
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if launcher.returncode:
        log.seek(0)
        raise SystemExit(f"convert failed: {log.read().decode(errors='replace')[-2000:]}")
    server = max([peaks.pop(pid) for pid in servers], default=(0, 0))
    return seconds, peaks.pop(launcher.pid, (0, 0)), sorted(peaks.values(), reverse=True), server


VERIFY = """
import sys, time
from shardflow.tools.verify import verify
started = time.perf_counter()
report = verify(sys.argv[1])
assert report.ok, report
print(time.perf_counter() - started)
"""

CEILING = """
import glob, hashlib, sys, time
import tensorflow as tf
from shardflow.core import metadata
from shardflow.core.decoder import Decoder
from shardflow.core.framing import unframe
info = metadata.read(sys.argv[1])
decoder = Decoder(info.schema)
shards = sorted(glob.glob(sys.argv[1] + "/*.tfrecord-*"))
started = time.perf_counter()
for shard in shards:  # every byte read, both CRCs of each record, SHA-256
    digest = hashlib.sha256()
    with open(shard, "rb") as f:
        for _ in unframe(f, digest):
            pass
def decoded(record):
    fields = decoder.parse(record)
    return tf.shape(decoder.image(fields.data, fields.shape))
images = tf.data.TFRecordDataset(shards).map(decoded, num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
for _ in images:  # parsed and decoded in batches, in parallel
    pass
print(time.perf_counter() - started)
"""


def seconds_of(script: str, data: str) -> float:
    """Run a timing script on a dataset in a fresh process; the seconds it printed."""
    result = subprocess.run([sys.executable, "-c", script, data], check=True, capture_output=True, text=True)
    return float(result.stdout.split()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="60000,600000", help="image counts, increasing")
    parser.add_argument("--sources", default="folders,idx", help="folders, idx or both")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-verify", action="store_true", help="time the conversion only")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "shardflow-scale"))
    args = parser.parse_args(argv)
    rows = []
    for source in args.sources.split(","):
        for n in sorted(int(s) for s in args.sizes.split(",")):
            src = {"folders": class_folders, "idx": idx_files}[source](args.cache, n)
            out = tempfile.mkdtemp(prefix="shardflow-scale-out-")
            try:
                print(f"converting {source} {n:,}...", file=sys.stderr)
                seconds, launcher, workers, server = convert_measured(src, os.path.join(out, "data"), args.workers)
                verify = ceiling = 0.0
                if not args.no_verify:
                    print(f"verifying {source} {n:,}...", file=sys.stderr)
                    verify = seconds_of(VERIFY, os.path.join(out, "data"))
                    ceiling = seconds_of(CEILING, os.path.join(out, "data"))
            finally:
                shutil.rmtree(out, ignore_errors=True)
            rows.append(
                [
                    source,
                    f"{n:,}",
                    f"{seconds:.1f}",
                    f"{seconds / n * 1e6:.0f}",
                    _mib(launcher),
                    ", ".join(map(_mib, workers)),
                    _mib(server),
                    *(
                        [f"{verify:.1f}", f"{ceiling:.1f}", f"{verify / ceiling:.2f}"]
                        if not args.no_verify
                        else ["", "", ""]
                    ),
                ]
            )
            print(" | ".join(rows[-1]), file=sys.stderr)
    print(
        markdown_table(
            [
                "source",
                "images",
                "convert s",
                "µs per image",
                "launcher peak MiB (anonymous)",
                "workers' peaks MiB (anonymous)",
                "fork server's",
                "verify s",
                "read+CRC+SHA+decode s",
                "verify / that",
            ],
            rows,
        )
    )


def _mib(peaks: tuple[int, int]) -> str:
    """(peak RSS, peak anonymous memory) as "RSS (anonymous)" in MiB."""
    return f"{peaks[0] / 2**20:,.0f} ({peaks[1] / 2**20:,.0f})"


if __name__ == "__main__":
    main()
