"""A learnable, photo-like synthetic image-classification dataset (stand-in for dogs-vs-cats / flower_photos).

Each picture has a random size (200..500 px a side), a random two-colour gradient background with mild
texture, and 1-3 randomly coloured, sized, placed and rotated objects. Only the objects' *shape family*
carries the class: class k draws family k (ellipses, crosses, triangles, rings, rectangles, stars); past the
last family the families repeat with a different fill (stripes, then a two-tone inset), so up to
``MAX_CLASSES`` classes stay distinguishable. Every image comes from its own generator seeded with
``[seed, class_index, i]``: the same arguments give byte-identical files, and an image does not depend on n.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw

DEFAULT_CLASSES = ("cat", "dog")
LAYOUTS = ("kaggle", "folders")
SHAPES = ("ellipse", "cross", "triangle", "ring", "rectangle", "star")
FILLS = ("solid", "striped", "two_tone")
MAX_CLASSES = len(SHAPES) * len(FILLS)

_MIN_SIDE, _MAX_SIDE = 200, 500
_MIN_QUALITY, _MAX_QUALITY = 75, 95
_LUMA = np.array([0.299, 0.587, 0.114])
_MIN_CONTRAST = 80.0


def write_sample_data(
    out: str | os.PathLike,
    *,
    layout: str = "kaggle",
    n: int = 2000,
    classes: Sequence[str] = DEFAULT_CLASSES,
    seed: int = 0,
) -> list[pathlib.Path]:
    """Write n JPEGs (balanced over classes) under out and return their paths (sorted).

    layout "kaggle" writes ``out/<class>.<i>.jpg``, layout "folders" writes ``out/<class>/<i>.jpg``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    classes = list(classes)
    if not 1 <= len(classes) <= MAX_CLASSES:
        raise ValueError(f"need 1..{MAX_CLASSES} classes, got {len(classes)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"class names must be unique, got {classes}")
    for name in classes:
        if not isinstance(name, str) or not name or "." in name or "/" in name:
            raise ValueError(f"bad class name {name!r}: must be a non-empty string without '.' or '/'")
    if n < len(classes):
        raise ValueError(f"n={n} is less than the number of classes ({len(classes)})")

    out = pathlib.Path(out)
    paths = []
    for k, name in enumerate(classes):
        if layout == "folders":
            (out / name).mkdir(parents=True, exist_ok=True)
        else:
            out.mkdir(parents=True, exist_ok=True)
        for i in range(n // len(classes) + (k < n % len(classes))):
            rng = np.random.default_rng([seed, k, i])
            image = render_image(k, rng)
            path = out / name / f"{i}.jpg" if layout == "folders" else out / f"{name}.{i}.jpg"
            image.save(path, "JPEG", quality=int(rng.integers(_MIN_QUALITY, _MAX_QUALITY + 1)))
            paths.append(path)
    return sorted(paths)


def render_image(class_index: int, rng: np.random.Generator) -> Image.Image:
    """One RGB picture of class `class_index`."""
    if not 0 <= class_index < MAX_CLASSES:
        raise ValueError(f"class_index must be in 0..{MAX_CLASSES - 1}, got {class_index}")
    shape = SHAPES[class_index % len(SHAPES)]
    fill = FILLS[class_index // len(SHAPES)]
    width, height = (int(v) for v in rng.integers(_MIN_SIDE, _MAX_SIDE + 1, size=2))
    image, background_luma = _background(width, height, rng)
    short = min(width, height)
    for _ in range(int(rng.integers(1, 4))):
        size = rng.uniform(0.2, 0.6) * short
        center = rng.uniform(size / 2, (width - size / 2, height - size / 2))
        angle = rng.uniform(0, 2 * math.pi)
        polygons = _shape_polygons(shape, rng)
        mask = _mask(image.size, polygons, size / 2, angle, center)
        colour = _contrasting_colour(background_luma(center), rng)
        image.paste(colour, mask=mask)
        if fill == "striped":
            image.paste(_invert(colour), mask=ImageChops.multiply(mask, _stripes(image.size, size / 8, rng)))
        elif fill == "two_tone":
            image.paste(_invert(colour), mask=_mask(image.size, polygons, size / 4, angle, center))
    return image


def _background(width: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, Callable]:
    """A two-colour gradient at a random angle with soft blotches and grain, and its luma at a point."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    direction = np.array([math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a)])
    x = np.arange(width, dtype=np.float32) * direction[0]
    y = np.arange(height, dtype=np.float32) * direction[1]
    t = y[:, None] + x[None, :]
    t_min, t_span = float(t.min()), float(np.ptp(t))
    t = (t - t_min) / t_span
    pixels = c0.astype(np.float32) + t[..., None] * (c1 - c0).astype(np.float32)
    blotches = Image.fromarray(rng.normal(0, 12, size=(6, 6)).astype(np.float32), "F")
    pixels += np.asarray(blotches.resize((width, height), Image.Resampling.BILINEAR))[..., None]
    pixels += rng.integers(-8, 9, size=(height, width, 1), dtype=np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    def luma_at(point: np.ndarray) -> float:
        s = (float(point @ direction) - t_min) / t_span
        return float(_LUMA @ (c0 + s * (c1 - c0)))

    return image, luma_at


def _shape_polygons(shape: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """The polygons (unit-radius vertices, mask value) of one randomly proportioned member of a family."""
    if shape == "ellipse":
        return [(_ellipse(rng.uniform(0.55, 1.0)), 255)]
    if shape == "cross":
        w = rng.uniform(0.2, 0.32)
        quarter = np.array([(w, 1), (w, w), (1, w)])
        return [(np.concatenate([quarter @ _rotation(q * math.pi / 2) for q in range(4)]), 255)]
    if shape == "triangle":
        angles = math.pi / 2 + np.arange(3) * 2 * math.pi / 3 + rng.uniform(-0.25, 0.25, size=3)
        return [(np.stack([np.cos(angles), np.sin(angles)], axis=1), 255)]
    if shape == "ring":
        aspect = rng.uniform(0.7, 1.0)
        return [(_ellipse(aspect), 255), (rng.uniform(0.45, 0.65) * _ellipse(aspect), 0)]
    if shape == "rectangle":
        aspect = rng.uniform(0.35, 0.9)
        return [(np.array([(1, aspect), (-1, aspect), (-1, -aspect), (1, -aspect)]), 255)]
    if shape == "star":
        angles = math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2, rng.uniform(0.38, 0.5), 1.0)
        return [(radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1), 255)]
    raise ValueError(f"unknown shape {shape!r}")


def _ellipse(aspect: float, points: int = 48) -> np.ndarray:
    angles = np.linspace(0, 2 * math.pi, points, endpoint=False)
    return np.stack([np.cos(angles), aspect * np.sin(angles)], axis=1)


def _rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])


def _mask(
    size: tuple[int, int], polygons: list[tuple[np.ndarray, int]], radius: float, angle: float, center: np.ndarray
) -> Image.Image:
    """An "L" mask of the polygons scaled to radius, rotated by angle and moved to center."""
    mask = Image.new("L", size)
    draw = ImageDraw.Draw(mask)
    for vertices, value in polygons:
        draw.polygon([tuple(p) for p in radius * vertices @ _rotation(angle) + center], fill=value)
    return mask


def _contrasting_colour(background_luma: float, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour whose luma differs from background_luma by at least _MIN_CONTRAST."""
    colour = rng.uniform(0, 255, size=3)
    luma = float(_LUMA @ colour)
    if abs(luma - background_luma) < _MIN_CONTRAST:
        if background_luma > 127.5:  # darken towards black
            goal, target = background_luma - _MIN_CONTRAST, 0.0
        else:  # lighten towards white
            goal, target = background_luma + _MIN_CONTRAST, 255.0
        a = (luma - goal) / (luma - target)
        colour = (1 - a) * colour + a * target
    red, green, blue = (int(round(c)) for c in colour)
    return red, green, blue


def _invert(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = colour
    return 255 - red, 255 - green, 255 - blue


def _stripes(size: tuple[int, int], half_period: float, rng: np.random.Generator) -> Image.Image:
    """An "L" mask of parallel stripes at a random angle."""
    a = rng.uniform(0, math.pi)
    x = np.arange(size[0], dtype=np.float32) * (math.cos(a) / half_period)
    y = np.arange(size[1], dtype=np.float32) * (math.sin(a) / half_period)
    return Image.fromarray(np.where((y[:, None] + x[None, :]) % 2 < 1, 255, 0).astype(np.uint8), "L")
