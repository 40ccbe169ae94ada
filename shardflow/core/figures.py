"""shardflow's pictures drawn with matplotlib: a figure whose text can be in any script, a grid of images with a
caption per row, and PNG bytes.

matplotlib is imported when a picture is drawn, not with shardflow, and nothing global changes: figures are drawn
on Agg canvases without pyplot, and the fonts apply only while a figure is drawn (`matplotlib.rc_context`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
logger = logging.getLogger(__name__)
PNG_COMPRESSION = 1  # zlib's level: photos barely compress further (a 1 MB grid: level 3 2% smaller, 25% slower)
# Tried in order, per character: DejaVu Sans (matplotlib's own: Latin, Greek, Cyrillic, Arabic, Hebrew) first,
# then the first installed font for Chinese, Japanese and Korean class names such as 猫.
CJK_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Source Han Sans",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "IPAexGothic",
    "IPAGothic",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Hiragino Sans",
    "Apple SD Gothic Neo",
    "Malgun Gothic",
    "Arial Unicode MS",
)


@functools.cache
def font_families() -> tuple[str, ...]:
    """DejaVu Sans, then every installed font of `CJK_FONTS`. With none installed, CJK characters come out as
    matplotlib's missing-glyph box, and `png` says once which characters and which fonts would draw them."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return ("DejaVu Sans", *(name for name in CJK_FONTS if name in installed))


def warm_up() -> None:
    """Import matplotlib, find the fonts and draw a word, so that the first real figure waits for none of it (the
    conversion warms up in a background thread while its job runs: 0.3-0.4 s less after the job)."""
    import matplotlib.patches  # noqa: F401 (image_grid's frames)

    with figure(40, 20) as drawn:
        drawn.text(0, 0, "shardflow")
        png(drawn)


@contextlib.contextmanager
def figure(width: float, height: float) -> Iterator[Figure]:
    """A figure `width` x `height` pixels on an Agg canvas; text made inside the `with` uses `font_families`."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"font.family": list(font_families())}):
        drawn = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        FigureCanvasAgg(drawn)
        yield drawn


def png(drawn: Figure) -> bytes:
    """The figure as PNG bytes, RGB (its background is opaque: an alpha channel would only add a quarter to
    compress). matplotlib's one warning per missing character becomes one logged line naming the characters (they
    are drawn as boxes); other warnings pass through."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = drawn.canvas
    assert isinstance(canvas, FigureCanvasAgg)  # (`figure` made it)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        canvas.draw()
    buffer = io.BytesIO()
    Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB").save(
        buffer, "png", compress_level=PNG_COMPRESSION, dpi=(DPI, DPI)
    )
    missing = []
    for warning in caught:
        text = str(warning.message)
        if text.startswith("Glyph ") and "missing from font" in text:
            missing.append(chr(int(text.split()[1])))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if missing:
        logger.warning(
            f"note: no installed font has {' '.join(dict.fromkeys(missing))}; they are drawn as boxes. "
            "Install a font for them (e.g. fonts-noto-cjk for Chinese, Japanese and Korean)."
        )
    return buffer.getvalue()


GAP = 4  # pixels between the cells of a grid, and around it
CAPTION = 20  # pixels of a row's caption, above its images
LABEL_LINE = 14  # pixels per line of the labels under each image (8 points)


def grid_size(rows: int, columns: int, tile: int, label_lines: int = 0) -> tuple[int, int]:
    """(width, height) in pixels of an `image_grid` of `rows` x `columns` cells of `tile` pixels, with
    `label_lines` lines of labels under each image."""
    return GAP + columns * (tile + GAP), GAP + rows * (CAPTION + tile + label_lines * LABEL_LINE + GAP)


def image_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray | None]]],
    tile: int,
    labels: Sequence[Sequence[str]] | None = None,
    min_columns: int = 1,
) -> bytes:
    """PNG bytes of a grid: one row per (caption, uint8 images [H, W, C]), the caption above the row's first
    image, each image in a `tile` x `tile` pixel cell (scaled to fit, aspect ratio kept, centred), at least
    `min_columns` cells wide; with `labels`, text under each image (`labels[row][column]`, lines split by
    newlines). A None image is an empty framed cell. Images are placed as pixels (`figimage`), not in axes:
    a grid of 48 draws in a tenth of the time."""
    from matplotlib.patches import Rectangle

    columns = max([min_columns, *(len(images) for _, images in rows)])
    lines = max((text.count("\n") + 1 for row in labels for text in row), default=1) if labels else 0
    width, height = grid_size(len(rows), columns, tile, lines)
    row_height = CAPTION + tile + lines * LABEL_LINE + GAP
    with figure(width, height) as drawn:
        for row, (text, images) in enumerate(rows):
            top = height - GAP - row * row_height  # pixels from the bottom, as matplotlib counts
            drawn.text(
                GAP / width, (top - CAPTION + 5) / height, text, fontsize=11, va="baseline", parse_math=False
            )  # class names are text: "$" is a dollar sign, not TeX
            for col, pixels in enumerate(images):
                left, bottom = GAP + col * (tile + GAP), top - CAPTION - tile
                if pixels is None:
                    drawn.add_artist(
                        Rectangle(
                            (left / width, bottom / height),
                            tile / width,
                            tile / height,
                            transform=drawn.transFigure,
                            fill=False,
                            edgecolor="0.6",
                        )
                    )
                else:
                    fitted = _fit(pixels, tile)
                    drawn.figimage(
                        fitted,
                        left + (tile - fitted.shape[1]) // 2,
                        bottom + (tile - fitted.shape[0]) // 2,
                        origin="upper",
                    )
                if labels:
                    drawn.text(
                        left / width,
                        (bottom - 2) / height,
                        labels[row][col],
                        fontsize=8,
                        va="top",
                        linespacing=1.2,
                        parse_math=False,
                    )
        return png(drawn)


def _fit(pixels: np.ndarray, tile: int) -> np.ndarray:
    """uint8 [H, W, C] scaled (nearest neighbour) so that its longer side is `tile`, as RGB [h, w, 3]."""
    from PIL import Image

    height, width = pixels.shape[:2]
    scale = tile / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.NEAREST)
    return np.asarray(picture.convert("RGB"))
