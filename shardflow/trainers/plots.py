"""history.png: accuracy and loss per epoch, training vs validation, drawn with Pillow (no plotting dependency)."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

PANEL_WIDTH, PANEL_HEIGHT, MARGIN = 480, 320, 48
COLOURS = {"training": (31, 119, 180), "validation": (255, 127, 14)}


def plot_history(history: dict[str, Sequence[float]], out: str) -> str:
    """Two panels like the tutorials' plots: accuracy (left) and loss (right), training vs validation."""
    panels = [("accuracy", "Training and validation accuracy"), ("loss", "Training and validation loss")]
    image = Image.new("RGB", (PANEL_WIDTH * len(panels), PANEL_HEIGHT), "white")
    for index, (metric, title) in enumerate(panels):
        series = {"training": history.get(metric, []), "validation": history.get(f"val_{metric}", [])}
        _panel(ImageDraw.Draw(image), index * PANEL_WIDTH, title, series)
    image.save(out)
    return out


def _panel(draw: ImageDraw.ImageDraw, left: int, title: str, series: dict[str, Sequence[float]]) -> None:
    values = [v for points in series.values() for v in points]
    epochs = max((len(points) for points in series.values()), default=0)
    x0, y0, x1, y1 = left + MARGIN, MARGIN, left + PANEL_WIDTH - 16, PANEL_HEIGHT - MARGIN
    draw.text((x0, 14), title, fill="black")
    draw.rectangle((x0, y0, x1, y1), outline=(160, 160, 160))
    if not values:
        return
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    span = high - low

    def point(epoch: int, value: float) -> tuple[float, float]:
        x = x0 + (x1 - x0) * (epoch / max(epochs - 1, 1))
        return x, y1 - (y1 - y0) * (value - low) / span

    for fraction in (0.0, 0.5, 1.0):
        value = low + fraction * span
        y = point(0, value)[1]
        draw.line((x0 - 4, y, x0, y), fill="black")
        draw.text((left + 4, y - 6), f"{value:.3g}", fill="black")
    for epoch in range(epochs):
        x = point(epoch, low)[0]
        draw.line((x, y1, x, y1 + 4), fill="black")
        if epochs <= 12 or epoch % max(1, epochs // 10) == 0:
            draw.text((x - 3, y1 + 6), str(epoch + 1), fill="black")
    draw.text(((x0 + x1) // 2 - 14, y1 + 22), "epoch", fill="black")
    for row, (name, points) in enumerate(series.items()):
        colour = COLOURS[name]
        xy = [point(epoch, value) for epoch, value in enumerate(points)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        legend_y = 10 + 14 * row  # above the plot area, right of the title: never over the lines
        draw.line((x1 - 110, legend_y + 6, x1 - 90, legend_y + 6), fill=colour, width=2)
        draw.text((x1 - 84, legend_y), name, fill="black")
