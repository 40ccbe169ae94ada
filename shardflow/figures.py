"""shardflow's pictures drawn with matplotlib: a figure whose text can be in any script, a grid of images with a
caption per row, and PNG bytes.

matplotlib is imported when a picture is drawn, not with shardflow, and nothing global changes: figures are drawn
on Agg canvases without pyplot, and the fonts apply only while a figure is drawn (`matplotlib.rc_context`).
"""
from __future__ import annotations

import contextlib
import functools
import io
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
# Tried in order, per character: DejaVu Sans (matplotlib's own: Latin, Greek, Cyrillic, Arabic, Hebrew) first,
# then the first installed font for Chinese, Japanese and Korean class names such as 猫.
CJK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN", "IPAexGothic",
             "IPAGothic", "Microsoft YaHei", "SimHei", "PingFang SC", "Hiragino Sans", "Apple SD Gothic Neo",
             "Malgun Gothic", "Arial Unicode MS")


@functools.cache
def font_families() -> tuple[str, ...]:
    """DejaVu Sans, then every installed font of `CJK_FONTS`. With none installed, CJK characters come out as
    matplotlib's missing-glyph box, and `png` says once which characters and which fonts would draw them."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return ("DejaVu Sans", *(name for name in CJK_FONTS if name in installed))


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
    """The figure as PNG bytes. matplotlib's one warning per missing character becomes one line on stderr naming
    the characters (they are drawn as boxes); other warnings pass through."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawn.savefig(buffer, format="png", dpi=DPI)
    missing = []
    for warning in caught:
        text = str(warning.message)
        if text.startswith("Glyph ") and "missing from font" in text:
            missing.append(chr(int(text.split()[1])))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if missing:
        print(f"note: no installed font has {' '.join(dict.fromkeys(missing))}; they are drawn as boxes. "
              f"Install a font for them (e.g. fonts-noto-cjk for Chinese, Japanese and Korean).", file=sys.stderr)
    return buffer.getvalue()


def image_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], tile: int) -> bytes:
    """PNG bytes of a grid: one row per (caption, uint8 images [H, W, C]), the caption above the row's first
    image, each image in a `tile` x `tile` pixel cell (aspect ratio kept)."""
    gap, caption = 4, 20
    columns = max((len(images) for _, images in rows), default=1)
    width, height = gap + columns * (tile + gap), gap + len(rows) * (caption + tile + gap)
    with figure(width, height) as drawn:
        for row, (text, images) in enumerate(rows):
            top = height - gap - row * (caption + tile + gap)  # pixels from the bottom, as matplotlib counts
            drawn.text(gap / width, (top - caption + 5) / height, text, fontsize=11, va="baseline",
                       parse_math=False)  # class names are text: "$" is a dollar sign, not TeX
            for col, pixels in enumerate(images):
                ax = drawn.add_axes(((gap + col * (tile + gap)) / width, (top - caption - tile) / height,
                                     tile / width, tile / height))
                ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=255,
                          interpolation="nearest")
                ax.set_axis_off()
        return png(drawn)
