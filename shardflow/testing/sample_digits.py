"""MNIST-like synthetic digits: what a dataset of small handwritten images looks like to the duplicate finder.

Each digit is drawn with Pillow's default font, then varied as handwriting varies and as MNIST was made: an
elastic distortion (a smooth random displacement field, as in Simard et al. 2003), a rotation, a shear and a
stroke width; then fitted into a 20x20 box and centred by its centre of mass in a 28x28 image, white on black.
Distinct digits of one kind are as alike as different people's handwriting (they are not copies of each other).
Digit `i` comes from its own generator seeded with `[seed, i]`, so it does not depend on n.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIDE = 28  # MNIST's image side
BOX = 20  # MNIST's digits are fitted into a BOX x BOX box, then centred by mass
_CANVAS = 64  # the digit is drawn and distorted at this size
_FIELD = 5  # the displacement field is random at FIELD x FIELD points, smoothly interpolated between them
_MAX_SHIFT = 3.0  # pixels of the canvas a point of the field moves at most, each way


def handwritten_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n MNIST-like digits: (uint8 images [n, 28, 28], labels [n])."""
    images = np.zeros((n, SIDE, SIDE), dtype=np.uint8)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        labels[i] = rng.integers(10)
        images[i] = _digit(int(labels[i]), rng)
    return images, labels


def _digit(label: int, rng: np.random.Generator) -> np.ndarray:
    canvas = Image.new("L", (_CANVAS, _CANVAS))
    font = ImageFont.load_default(size=int(rng.integers(40, 52)))
    ImageDraw.Draw(canvas).text(
        (_CANVAS // 2, _CANVAS // 2),
        str(label),
        fill=255,
        font=font,
        anchor="mm",
        stroke_width=int(rng.integers(1, 4)),
        stroke_fill=255,
    )
    canvas = _elastic(np.asarray(canvas), rng)
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), Image.Resampling.BILINEAR)
    canvas = canvas.transform(
        canvas.size, Image.Transform.AFFINE, (1, float(rng.uniform(-0.3, 0.3)), 0, 0, 1, 0), Image.Resampling.BILINEAR
    )
    digit = canvas.crop(canvas.getbbox())
    scale = BOX / max(digit.size)
    digit = digit.resize(
        (max(1, round(digit.width * scale)), max(1, round(digit.height * scale))), Image.Resampling.LANCZOS
    )
    ink = np.asarray(digit, dtype=np.float64)
    rows, cols = np.indices(ink.shape)
    centre_row, centre_col = (rows * ink).sum() / ink.sum(), (cols * ink).sum() / ink.sum()
    image = Image.new("L", (SIDE, SIDE))
    image.paste(digit, (round(SIDE / 2 - centre_col), round(SIDE / 2 - centre_row)))
    return np.asarray(image)


def _elastic(pixels: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """`pixels` resampled through a smooth random displacement field (bicubic between random points)."""

    def field() -> np.ndarray:
        coarse = Image.fromarray(rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, (_FIELD, _FIELD)).astype(np.float32), "F")
        return np.asarray(coarse.resize(pixels.shape[::-1], Image.Resampling.BICUBIC))

    rows, cols = np.indices(pixels.shape)
    rows = np.clip(np.round(rows + field()), 0, pixels.shape[0] - 1).astype(np.intp)
    cols = np.clip(np.round(cols + field()), 0, pixels.shape[1] - 1).astype(np.intp)
    return Image.fromarray(pixels[rows, cols])
