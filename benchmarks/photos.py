"""A folder of real-photo JPEGs for the conversion benchmarks: crops of Debian's desktop background photos.

The photos are the JPEGs of Debian's `mate-backgrounds` package (11 nature photos, a still life and an elephant
drawing, 1280-5640 px). Each output is a random crop of one of them, resized so that its longer side is 200-500 px
and saved as a JPEG of quality 80-95: the sizes of Kaggle's dogs-vs-cats, with a photo's texture. One class
folder per source photo (`SRC/aqua/00017.jpg`, ...). The same seed writes the same files. Usage:

    apt-get download mate-backgrounds && dpkg -x mate-backgrounds_*.deb /tmp/backgrounds
    .venv/bin/python benchmarks/photos.py /tmp/backgrounds /tmp/photos-24000 --n 24000
"""

from __future__ import annotations

import argparse
import glob
import os
import random

import numpy as np
from PIL import Image

WORKING_SIDE = 1600  # sources are downscaled to this longer side once, then cropped
SIDES = (200, 500)  # the outputs' longer side, inclusive
QUALITIES = (80, 95)
GAINS = (0.75, 1.25)  # per channel: crops of one photo's flat sky or water differ in colour, as photos do


def sources(backgrounds: str) -> dict[str, Image.Image]:
    """Class name -> source photo (RGB, longer side at most WORKING_SIDE): the package's JPEGs, the largest of
    each picture (the elephants come in three sizes)."""
    found: dict[str, tuple[int, str]] = {}
    for path in glob.glob(os.path.join(backgrounds, "**", "*.jpg"), recursive=True):
        name = os.path.basename(path).split("_")[0].split(".")[0].lower()
        size = os.path.getsize(path)
        if size > found.get(name, (0, ""))[0]:
            found[name] = (size, path)
    if not found:
        raise SystemExit(f"no JPEG under {backgrounds}; see this script's docstring for how to get them")
    photos = {}
    for name, (_, path) in sorted(found.items()):
        with Image.open(path) as image:
            image.draft("RGB", (WORKING_SIDE, WORKING_SIDE))
            image = image.convert("RGB")
            image.thumbnail((WORKING_SIDE, WORKING_SIDE))
            photos[name] = image
    return photos


def crop(photo: Image.Image, rng: random.Random) -> Image.Image:
    """A random crop of `photo` (a quarter to all of its shorter side, aspect 3:4 to 4:3), longer side 200-500,
    mirrored half the time, each channel scaled by a random gain."""
    aspect = rng.uniform(0.75, 4 / 3)
    height = rng.uniform(0.25, 1.0) * min(photo.size) / max(1.0, aspect)
    width = height * aspect
    left, top = rng.uniform(0, photo.width - width), rng.uniform(0, photo.height - height)
    side = rng.randint(*SIDES)
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    cropped = photo.resize(
        size, Image.Resampling.BILINEAR, box=(left, top, left + width, top + height), reducing_gap=2.0
    )
    if rng.random() < 0.5:
        cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    gains = np.array([rng.uniform(*GAINS) for _ in range(3)], dtype=np.float32)
    return Image.fromarray(np.clip(np.asarray(cropped) * gains, 0, 255).astype(np.uint8))


def write_photos(backgrounds: str, out: str, n: int, seed: int = 0) -> None:
    """`n` crops into class folders of `out`, spread evenly over the source photos."""
    photos = sources(backgrounds)
    names = list(photos)
    rng = random.Random(seed)
    for name in names:
        os.makedirs(os.path.join(out, name), exist_ok=True)
    for i in range(n):
        name = names[i % len(names)]
        crop(photos[name], rng).save(os.path.join(out, name, f"{i:05d}.jpg"), "JPEG", quality=rng.randint(*QUALITIES))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backgrounds", help="where mate-backgrounds was unpacked (searched for *.jpg)")
    parser.add_argument("out", help="the folder to write (class folders of JPEGs)")
    parser.add_argument("--n", type=int, default=24000, help="photos to write (default 24000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_photos(args.backgrounds, args.out, args.n, args.seed)


if __name__ == "__main__":
    main()
