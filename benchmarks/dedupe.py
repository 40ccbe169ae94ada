"""What finding duplicates costs and how well it finds them, side by side in one run:

- per image, the job's preparation (validate, statistics, encode) of sample JPEGs without and with the duplicate
  keys (`duplicates.image_hashes`), in one process, and the ratio;
- grouping every image's keys (banded index + union-find, one process);
- `shardflow convert --workers 2` without and with `--dedupe near` (the Dedupe stage);
- how well, on the sample JPEGs and on MNIST-like 28x28 digits (`sample_digits`, as alike as handwriting): how far
  each kind of copy (JPEG quality 30, 50% downscale, PNG copy) of the first 300 images is from its original, and
  whether it is found; and how many pairs of distinct images pass pHash alone, pHash and colour, and all three
  checks (the false positives); with `--photos DIR`, the same for real photos (a sample of DIR's JPEGs, e.g. the
  folder `benchmarks/photos.py` writes). Usage:

    .venv/bin/python benchmarks/dedupe.py [--n 3000] [--repeats 3] [--photos DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import random
import shutil
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from common import markdown_table, sample_corpus
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.core import duplicates
from shardflow.core.images import ImageOptions, prepare, prepare_encoded
from shardflow.testing.sample_digits import handwritten_digits

COPIED = 300  # images whose copies are made and hashed
PHOTOS = 1500  # real photos sampled from --photos, each copied
DIGITS = 3000  # MNIST-like digits whose pairs are checked


def best_times(repeats: int, methods: dict[str, tuple[Callable[[], float], Callable[[], object]]]) -> dict[str, float]:
    """The least time of `repeats` runs of each method, by its own clock; runs interleaved, so machine noise hits
    all alike."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, (clock, work) in methods.items():
            started = clock()
            work()
            best[name] = min(best.get(name, float("inf")), clock() - started)
    return best


def copies(data: bytes) -> dict[str, bytes]:
    image = Image.open(io.BytesIO(data))
    out = {}
    for kind, (copy, fmt, params) in {
        "JPEG quality 30": (image, "JPEG", {"quality": 30}),
        "50% downscale": (image.resize((image.width // 2, image.height // 2)), "JPEG", {"quality": 90}),
        "PNG copy": (image, "PNG", {}),
    }.items():
        buffer = io.BytesIO()
        copy.save(buffer, fmt, **params)
        out[kind] = buffer.getvalue()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="sample images to generate (default 3000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the best is reported")
    parser.add_argument("--photos", help=f"also copies of {PHOTOS} JPEGs sampled from this folder (searched deeply)")
    args = parser.parse_args(argv)
    with sample_corpus(args.n, layout="kaggle") as (work, src):
        files = sorted(os.path.join(src, name) for name in os.listdir(src))
        payloads = [open(path, "rb").read() for path in files]
        options = ImageOptions()
        n = len(payloads)
        keys = [prepare_encoded(p, options, hashes=True).hashes for p in payloads]
        out = os.path.join(work, "out")

        def job(dedupe: str | None) -> None:
            shutil.rmtree(out, ignore_errors=True)
            with contextlib.redirect_stdout(io.StringIO()):
                convert(src, out, ConvertOptions(workers=2, dedupe=dedupe, overwrite=True))

        cpu, wall = time.process_time, time.perf_counter  # one process: its CPU time (the machine is shared)
        seconds = best_times(
            args.repeats,
            {
                "per-image preparation, 1 process (CPU time)": (
                    cpu,
                    lambda: [prepare_encoded(p, options) for p in payloads],
                ),
                "per-image preparation + duplicate keys, 1 process (CPU time)": (
                    cpu,
                    lambda: [prepare_encoded(p, options, hashes=True) for p in payloads],
                ),
                f"grouping {n} images' keys (near), 1 process (CPU time)": (
                    cpu,
                    lambda: duplicates.find_groups(keys, "near"),
                ),
                "shardflow convert --workers 2 (wall time)": (wall, lambda: job(None)),
                "shardflow convert --workers 2 --dedupe near (wall time)": (wall, lambda: job("near")),
            },
        )
        names = list(seconds)
        ratios = [1.0, seconds[names[1]] / seconds[names[0]], None, 1.0, seconds[names[4]] / seconds[names[3]]]
        print(f"\n{n} sample JPEGs, {os.cpu_count()} cores, best of {args.repeats}\n")
        print(
            markdown_table(
                ["step", "ms per image", "vs without"],
                [
                    [name, f"{t / n * 1e3:.3f}", "" if ratio is None else f"{ratio:.2f}x"]
                    for (name, t), ratio in zip(seconds.items(), ratios)
                ],
            )
        )
        print(
            f"\nthresholds: {duplicates.NEAR_THRESHOLD} of 64 bits, colours within {duplicates.COLOUR_TOLERANCE} "
            f"levels, structure within {duplicates.STRUCTURE_TOLERANCE} levels RMS"
        )
        how_well(f"{n} sample JPEGs", keys, [copies(data) for data in payloads[:COPIED]], options)
        images, labels = handwritten_digits(DIGITS)
        how_well(
            f"{DIGITS} MNIST-like 28x28 digits (sample_digits)",
            [prepare(image, ImageOptions(channels=1), hashes=True).hashes for image in images],
            [copies(png(image)) for image in images[:COPIED]],
            ImageOptions(channels=1),
            labels,
        )
        if args.photos:
            found = sorted(glob.glob(os.path.join(args.photos, "**", "*.jp*g"), recursive=True))
            photos = [open(path, "rb").read() for path in random.Random(0).sample(found, min(PHOTOS, len(found)))]
            how_well(
                f"{len(photos)} real photos sampled from {args.photos}",
                [prepare_encoded(data, options, hashes=True).hashes for data in photos],
                [copies(data) for data in photos],
                options,
            )


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def how_well(
    what: str,
    keys: list[duplicates.ImageHashes],
    copied: list[dict[str, bytes]],
    options: ImageOptions,
    labels: np.ndarray | None = None,
) -> None:
    """Print how far each kind of copy of the first images is from its original (and whether it is found), and
    how many pairs of the distinct images each check lets through."""
    hashes, colours, structures = duplicates.near_columns(keys)
    found: dict[str, list[tuple[int, float, float, bool]]] = {}
    for key, image_copies in zip(keys, copied):
        for kind, copy in image_copies.items():
            other = prepare_encoded(copy, options, hashes=True).hashes
            pair = duplicates.near_columns([key, other])
            found.setdefault(kind, []).append(
                (
                    int(duplicates.hamming(*pair[0])),
                    float(duplicates.colour_distances(*pair[1])),
                    float(duplicates.structure_distances(*pair[2])),
                    duplicates.is_near(key, other),
                )
            )
    print(f"\n{what}:\n")
    print(
        markdown_table(
            [
                f"copies of the first {len(copied)}",
                "mean pHash distance",
                "largest pHash distance",
                "largest colour distance",
                "largest structure distance",
                "found",
            ],
            [
                [
                    kind,
                    f"{np.mean([d[0] for d in rows]):.2f}",
                    max(d[0] for d in rows),
                    f"{max(d[1] for d in rows):.1f}",
                    f"{max(d[2] for d in rows):.1f}",
                    f"{sum(d[3] for d in rows)}/{len(rows)}",
                ]
                for kind, rows in found.items()
            ],
        )
    )
    pairs = len(keys) * (len(keys) - 1) // 2
    checks = {
        "pHash alone": (colours * 0, structures * 0),
        "pHash + colour": (colours, structures * 0),
        "pHash + colour + structure (near)": (colours, structures),
    }
    rows, closest = [], None
    for name, (colour_rows, structure_rows) in checks.items():
        passed = duplicates.near_pairs(hashes, colour_rows, structure_rows)
        if name == "pHash + colour" and passed:
            first, second = np.array(passed).T
            closest = duplicates.structure_distances(structures[first], structures[second]).min()
        rows.append(
            [
                name,
                f"{len(passed):,} of {pairs:,}",
                f"{len(passed) / pairs:.1e}",
                len({i for pair in passed for i in pair}),
            ]
            + ([sum(labels[i] != labels[j] for i, j in passed)] if labels is not None else [])
        )
    print()
    print(
        markdown_table(
            ["distinct images: pairs passing", "pairs", "per pair", "images in such a pair"]
            + (["pairs of different digits"] if labels is not None else []),
            rows,
        )
    )
    if closest is not None:
        print(f"\nthe closest of the pairs passing pHash + colour differ by {closest:.1f} levels in structure")


if __name__ == "__main__":
    main()
