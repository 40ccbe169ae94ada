"""What finding duplicates costs and how well it finds them, side by side in one run on sample JPEGs:

- per image, the job's preparation (validate, statistics, encode) without and with the duplicate keys (exact
  SHA-256 of the pixels + pHash), in one process, and the ratio;
- grouping every image's keys (banded index + union-find, one process);
- `shardflow convert --workers 2` without and with `--dedupe near` (the Dedupe stage);
- how well: the largest pHash and colour distances of each kind of copy (JPEG quality 30, 50% downscale, PNG
  copy) of the first 300 images, and the false-positive rate: pairs of distinct images that are near duplicates,
  and how many of them pHash alone would have made;
- where it is weak: how synthetic 28x28 digits (one font, shifted and rotated a little) group. Usage:

    .venv/bin/python benchmarks/dedupe.py [--n 3000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from shardflow import duplicates
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.images import ImageOptions, prepare, prepare_encoded
from common import markdown_table, sample_corpus

COPIED = 300  # images whose copies are made and hashed
DIGITS = 3000  # synthetic MNIST-like digits grouped


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


def synthetic_digits(n: int, seed: int = 0) -> list[np.ndarray]:
    """n 28x28 white-on-black digits of one font, each shifted by up to 3 px and rotated by up to 15 degrees."""
    rng, font, digits = np.random.default_rng(seed), ImageFont.load_default(size=22), []
    for _ in range(n):
        image = Image.new("L", (40, 40))
        ImageDraw.Draw(image).text((10 + int(rng.integers(-3, 4)), 6 + int(rng.integers(-3, 4))),
                                   str(rng.integers(10)), fill=255, font=font, stroke_width=int(rng.integers(0, 3)),
                                   stroke_fill=255)
        image = image.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
        digits.append(np.asarray(image.resize((28, 28), Image.Resampling.BILINEAR)))
    return digits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="sample images to generate (default 3000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the best is reported")
    args = parser.parse_args(argv)
    with sample_corpus(args.n, layout="kaggle") as (work, src):
        files = sorted(os.path.join(src, name) for name in os.listdir(src))
        payloads = [open(path, "rb").read() for path in files]
        options = ImageOptions()
        n = len(payloads)
        keys = [prepare_encoded(p, options, hashes=True).hashes for p in payloads]
        exact, perceptual = [k.exact for k in keys], np.array([k.perceptual for k in keys], dtype=np.uint64)
        colours = duplicates.colour_rows([k.colour for k in keys])
        out = os.path.join(work, "out")

        def job(dedupe: str | None) -> None:
            shutil.rmtree(out, ignore_errors=True)
            with contextlib.redirect_stdout(io.StringIO()):
                convert(src, out, ConvertOptions(workers=2, dedupe=dedupe, overwrite=True))
        cpu, wall = time.process_time, time.perf_counter  # one process: its CPU time (the machine is shared)
        seconds = best_times(args.repeats, {
            "per-image preparation, 1 process (CPU time)":
                (cpu, lambda: [prepare_encoded(p, options) for p in payloads]),
            "per-image preparation + duplicate keys, 1 process (CPU time)":
                (cpu, lambda: [prepare_encoded(p, options, hashes=True) for p in payloads]),
            f"grouping {n} images' keys (near), 1 process (CPU time)":
                (cpu, lambda: duplicates.find_groups(exact, perceptual, [k.colour for k in keys], "near")),
            "shardflow convert --workers 2 (wall time)": (wall, lambda: job(None)),
            "shardflow convert --workers 2 --dedupe near (wall time)": (wall, lambda: job("near")),
        })
        names = list(seconds)
        ratios = [1.0, seconds[names[1]] / seconds[names[0]], None, 1.0, seconds[names[4]] / seconds[names[3]]]
        print(f"\n{n} sample JPEGs, {os.cpu_count()} cores, best of {args.repeats}\n")
        print(markdown_table(["step", "ms per image", "vs without"],
                             [[name, f"{t / n * 1e3:.3f}", "" if ratio is None else f"{ratio:.2f}x"]
                              for (name, t), ratio in zip(seconds.items(), ratios)]))
        found: dict[str, list[tuple[int, float, bool]]] = {}
        for data, key, colour in zip(payloads[:COPIED], keys, colours):
            for kind, copy in copies(data).items():
                copied = prepare_encoded(copy, options, hashes=True).hashes
                found.setdefault(kind, []).append((
                    int(duplicates.hamming(np.uint64(key.perceptual), np.uint64(copied.perceptual))),
                    float(duplicates.colour_distances(colour, duplicates.colour_rows([copied.colour])[0])),
                    duplicates.is_near(key, copied)))
        print(f"\nthresholds: {duplicates.NEAR_THRESHOLD} of 64 bits, colours within "
              f"{duplicates.COLOUR_TOLERANCE} levels\n")
        print(markdown_table([f"copies of the first {COPIED} images", "largest pHash distance",
                              "largest colour distance", "found"],
                             [[kind, max(d[0] for d in kind_found), f"{max(d[1] for d in kind_found):.1f}",
                               f"{sum(d[2] for d in kind_found)}/{len(kind_found)}"]
                              for kind, kind_found in found.items()]))
        pairs = n * (n - 1) // 2
        false = duplicates.near_pairs(perceptual, colours)
        by_hash = duplicates.near_pairs(perceptual, np.zeros_like(colours))
        apart = [float(duplicates.colour_distances(colours[i], colours[j])) for i, j in by_hash]
        print(f"\ndistinct images: {len(false)} of {pairs:,} pairs are near duplicates (false-positive rate "
              f"{len(false) / pairs:.2e} per pair; {len({i for pair in false for i in pair})} of {n} images grouped "
              f"with an unrelated one); by pHash alone {len(by_hash)} pairs ({len(by_hash) / pairs:.2e} per pair)"
              + (f", whose colours differ by {min(apart):.1f} to {max(apart):.1f} levels" if apart else ""))
        digits = [prepare(d, ImageOptions(channels=1), hashes=True).hashes for d in synthetic_digits(DIGITS)]
        groups = duplicates.find_groups([k.exact for k in digits], np.array([k.perceptual for k in digits],
                                        dtype=np.uint64), [k.colour for k in digits], "near")
        print(f"\n{DIGITS} synthetic 28x28 digits: {sum(map(len, groups))} in {len(groups)} near groups, the largest "
              f"of {max(map(len, groups), default=0)}")

if __name__ == "__main__":
    main()
