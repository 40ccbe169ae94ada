"""Conversion throughput, side by side in one run: the Beam job (1 and 2 workers) vs a plain single-process loop.

The plain loop is what users write today: decode each file with PIL to validate it, write `tf.train.Example`s
with one `tf.io.TFRecordWriter` per split. A TFDS user would write a `GeneratorBasedBuilder` instead: TFDS's own
writer (one process), which stores each file's bytes as they are, without decoding them. The job always takes
every image's duplicate keys and groups them (`FindDuplicates`); one row adds `--dedupe near`. Two more loops run
the job's own per-image code (validation, statistics, duplicate keys, serialization, TFRecord framing) without
Beam, in one process and in two processes on half the files each: what two cores give this code on this machine,
the ceiling for `--workers 2`. The last two rows time what a user types, each in a new process with its imports
(TensorFlow's for the loop; Beam's and TFDS's for shardflow, whose workers' fork server starts before them): the
loop as a script (`hand_loop.py`) and `shardflow convert`; the second is compared with the first.
Each row also shows the CPU seconds per image of all its processes (robust to other jobs on the machine).
Usage:

    .venv/bin/python benchmarks/convert.py [--n 3000] [--src FOLDER] [--repeats 1] [--only NAME ...]

`--src` takes a folder of class folders or Kaggle names; `benchmarks/photos.py` writes one of real photos.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

import hand_loop
from common import markdown_table, paired_ratios
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.beam_jobs.local_workers import local_beam_args, local_runner
from shardflow.beam_jobs.sources import InputFile, list_source
from shardflow.beam_jobs.splits import DEFAULT_SPLITS, split_for
from shardflow.core import schema
from shardflow.core.framing import frame
from shardflow.core.images import ImageOptions, Rejected, prepare
from shardflow.testing.sample_data import write_sample_data


class FramedWriter:
    """TFRecord files written as the job writes them (`framing.frame`), without TensorFlow."""

    def __init__(self, path: str):
        self._file = open(path, "wb")

    def write(self, record: bytes) -> None:
        self._file.write(frame(record))

    def close(self) -> None:
        self._file.close()


def loop(
    src: str,
    out: str,
    to_record: Callable[[InputFile, bytes], bytes | None],
    open_writer: Callable[[str], Any] = tf.io.TFRecordWriter,
    part: int = 0,
    parts: int = 1,
) -> int:
    """One process: every input (of read tasks `part`, `part + parts`, ...) through `to_record` (None: rejected),
    records written per split with `open_writer`."""
    listing = list_source(src)
    os.makedirs(out, exist_ok=True)
    writers = {s: open_writer(os.path.join(out, f"{s}-{part}.tfrecord")) for s in DEFAULT_SPLITS}
    records = 0
    for task in listing.tasks[part::parts]:
        for item, data in task.read():
            record = to_record(item, data)
            if record is not None:
                writers[split_for(item.path, DEFAULT_SPLITS)].write(record)
                records += 1
    for writer in writers.values():
        writer.close()
    return records


def shardflow_loop(src: str, out: str, part: int = 0, parts: int = 1) -> int:
    """The job's per-image code in a plain loop over read tasks `part`, `part + parts`, ..."""
    records = schema.RecordSchema(tuple(list_source(src).class_names), 3, "passthrough")
    return loop(src, out, shardflow_record(records), FramedWriter, part, parts)


def shardflow_loops(src: str, out: str, parts: int) -> int:
    """`shardflow_loop` in `parts` processes at once, each on its share of the read tasks (forked: the children
    use no TensorFlow)."""
    with multiprocessing.get_context("fork").Pool(parts) as pool:
        return sum(pool.starmap(shardflow_loop, [(src, out, part, parts) for part in range(parts)]))


def plain_record(item: InputFile, data: bytes) -> bytes | None:
    """What users write today (`hand_loop.record`): validate by decoding with PIL, build a tf.train.Example."""
    return hand_loop.record(item.path, item.label, data)


def shardflow_record(records: schema.RecordSchema) -> Callable[[InputFile, bytes], bytes | None]:
    """The job's own per-image code (validation, statistics, duplicate keys, serialization), to show Beam's
    overhead."""

    def to_record(item: InputFile, data: bytes) -> bytes | None:
        try:
            prepared = prepare(data, ImageOptions(), hashes=True)
        except Rejected:
            return None
        return records.serialize(prepared.data, item.label, item.path)

    return to_record


def tfds_builder(src: str, out: str) -> int:
    """What a TFDS user writes for a folder of class folders: a `GeneratorBasedBuilder` whose examples are the
    files' paths (TFDS reads and stores the bytes, undecoded), the splits of the other methods; TFDS's defaults."""
    import tensorflow_datasets as tfds

    listing = list_source(src)
    by_split: dict[str, list[InputFile]] = {split: [] for split in DEFAULT_SPLITS}
    for task in listing.tasks:
        for item in task.files:
            by_split[split_for(item.path, DEFAULT_SPLITS)].append(item)

    class Photos(tfds.core.GeneratorBasedBuilder, skip_registration=True):  # (defined again on each repeat)
        VERSION = tfds.core.Version("1.0.0")

        def _info(self) -> tfds.core.DatasetInfo:
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(encoding_format="jpeg"),
                        "label": tfds.features.ClassLabel(names=listing.class_names),
                        "image/filename": tfds.features.Text(),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(items) for split, items in by_split.items() if items}

        def _generate_examples(self, items):
            for item in items:
                yield (
                    item.path,
                    {"image": os.path.join(src, item.path), "label": item.label, "image/filename": item.path},
                )

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        builder = Photos(data_dir=out)
        builder.download_and_prepare()
    return sum(split.num_examples for split in builder.info.splits.values())


def empty_beam_job(workers: int) -> None:
    """The fixed cost of any local Beam job: start the worker processes, run a tiny reshuffle and grouping."""
    options = PipelineOptions(local_beam_args(workers))
    with local_runner(workers) as runner, beam.Pipeline(runner=runner, options=options) as pipeline:
        _ = pipeline | beam.Create(range(workers)) | beam.GroupBy(lambda x: x % 2)


def beam_job(src: str, out: str, workers: int, dedupe: str | None = None) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        info = convert(src, out, ConvertOptions(workers=workers, overwrite=True, dedupe=dedupe))
    return info.num_records


def command(argv: list[str]) -> int:
    """`argv` in a new process, as a user runs it (its imports included); its output is dropped."""
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0


def paired_ratio(baseline: list[float], times: list[float]) -> str:
    """The median of the rounds' `baseline / times` (`paired_ratios`), with their range when several."""
    ratios = paired_ratios(baseline, times)
    return f"{statistics.median(ratios):.2f}x" + (f" ({ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else "")


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (Beam's workers, the pool's processes)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


LOOP = "plain loop (PIL + tf.io.TFRecordWriter), 1 process"
SCRIPT = "the same loop as a command: python benchmarks/hand_loop.py (its imports included)"


def _baseline(name: str) -> str:
    """The row a method is compared with: commands with the loop as a command, the others with the loop."""
    return SCRIPT if "command" in name else LOOP


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="sample images to generate (default 3000)")
    parser.add_argument("--src", help="convert this folder instead of generated sample data")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; the best is reported")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="WORDS",
        help="run the plain loop and the methods whose names contain one of these words",
    )
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="shardflow-bench-")
    try:
        src = args.src or os.path.join(work, "train")
        if not args.src:
            print(f"writing {args.n} sample images...", file=sys.stderr)
            write_sample_data(src, n=args.n)
        megabytes = (
            sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(src) for name in names)
            / 2**20
        )
        shardflow = os.path.join(os.path.dirname(sys.executable), "shardflow")
        methods = {
            LOOP: lambda out: loop(src, out, plain_record),
            "TFDS GeneratorBasedBuilder (bytes stored undecoded), 1 process": lambda out: tfds_builder(src, out),
            "shardflow's per-image code in a plain loop, 1 process": lambda out: shardflow_loop(src, out),
            "the same in 2 processes, half the files each (ceiling)": lambda out: shardflow_loops(src, out, 2),
            "shardflow convert --workers 1": lambda out: beam_job(src, out, 1),
            "shardflow convert --workers 2": lambda out: beam_job(src, out, 2),
            "shardflow convert --workers 2 --dedupe near": lambda out: beam_job(src, out, 2, "near"),
            SCRIPT: lambda out: command([sys.executable, hand_loop.__file__, src, out]),
            "`shardflow convert SRC OUT --workers 2` as a command (its imports included)": lambda out: command(
                [shardflow, "convert", src, out, "--workers", "2"]
            ),
        }
        methods = {
            name: run
            for name, run in methods.items()
            if name == LOOP or not args.only or any(word in name for word in args.only)
        }
        rounds: dict[str, list[float]] = {name: [] for name in methods}
        cpu: dict[str, float] = {}
        floor, images = float("inf"), 0
        loads = [os.getloadavg()[0]]
        for _ in range(args.repeats):  # interleaved, so machine noise hits every method alike
            for name, run in methods.items():
                out = os.path.join(work, "out")
                shutil.rmtree(out, ignore_errors=True)
                started, cpu_started = time.perf_counter(), cpu_seconds()
                records = run(out)
                images = images or records  # the plain loop's records: every valid input
                rounds[name].append(time.perf_counter() - started)
                cpu[name] = min(cpu.get(name, float("inf")), cpu_seconds() - cpu_started)
                loads.append(os.getloadavg()[0])
            started = time.perf_counter()
            empty_beam_job(2)
            floor = min(floor, time.perf_counter() - started)
        print(
            f"\n{images} images, {megabytes:.0f} MB of JPEG, {os.cpu_count()} cores, best of {args.repeats}; "
            f"load average (1 min) {min(loads):.1f}-{max(loads):.1f} during the run; vs loop: the median of each "
            "round's ratio to the loop run beside it (their range; a command's: to the loop as a command)\n"
        )
        print(
            markdown_table(
                ["method", "seconds", "images/s", "vs loop", "CPU ms/image"],
                [
                    [
                        name,
                        f"{min(times):.1f}",
                        f"{images / min(times):.0f}",
                        "1.00x" if name in (LOOP, SCRIPT) else paired_ratio(rounds[_baseline(name)], times),
                        f"{1000 * cpu[name] / images:.2f}",
                    ]
                    for name, times in rounds.items()
                ]
                + [["an empty 2-worker Beam job (start-up floor)", f"{floor:.1f}", "", "", ""]],
            )
        )
        print("\nEach round's seconds, in the order they ran:\n")
        print(
            markdown_table(
                ["method", *(f"round {i + 1}" for i in range(args.repeats))],
                [[name, *(f"{t:.1f}" for t in times)] for name, times in rounds.items()],
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
