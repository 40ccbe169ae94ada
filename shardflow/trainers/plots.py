"""history.png: accuracy and loss per epoch, training vs validation, side by side like the tutorials' plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shardflow.core import figures

PANELS = (("accuracy", "Training and validation accuracy"), ("loss", "Training and validation loss"))


def plot_history(history: Mapping[str, Sequence[float]], out: str) -> str:
    """Two panels: accuracy (left) and loss (right), training vs validation per epoch; returns `out`."""
    with figures.figure(960, 360) as drawn:
        drawn.set_layout_engine("constrained")
        for ax, (metric, title) in zip(drawn.subplots(1, len(PANELS)), PANELS):
            for label, key, style in (("training", metric, "o-"), ("validation", f"val_{metric}", "s-")):
                values = history.get(key, [])
                if len(values):
                    ax.plot(range(1, len(values) + 1), values, style, label=label, markersize=4)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        data = figures.png(drawn)
    with open(out, "wb") as f:
        f.write(data)
    return out
