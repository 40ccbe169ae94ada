"""The pictures people look at, drawn with matplotlib: history.png, the preview grid and the card's samples.png;
class names in any script (猫) come out as characters when a font for them is installed, and otherwise as one
note saying what to install, never as a stream of matplotlib warnings."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.core import figures
from shardflow.testing.sample_data import write_sample_data
from shardflow.tools.preview import preview_grid
from shardflow.trainers.plots import plot_history

TRAINING, VALIDATION = (31, 119, 180), (255, 127, 14)  # matplotlib's first two line colours


def colour_pixels(path, colour) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(pixels - colour).sum(-1) < 30).sum())


def test_history_plot_draws_validation_only_when_there_is_some(tmp_path):
    both, alone = tmp_path / "both.png", tmp_path / "alone.png"
    plot_history(
        {
            "accuracy": [0.5, 0.7, 0.8],
            "loss": [0.7, 0.5, 0.4],
            "val_accuracy": [0.5, 0.6, 0.6],
            "val_loss": [0.7, 0.6, 0.6],
        },
        str(both),
    )
    plot_history({"accuracy": [0.5, 0.7, 0.8], "loss": [0.7, 0.5, 0.4]}, str(alone))
    assert Image.open(both).size == Image.open(alone).size == (960, 360)
    assert colour_pixels(both, TRAINING) > 200 and colour_pixels(both, VALIDATION) > 200
    assert colour_pixels(alone, TRAINING) > 200 and colour_pixels(alone, VALIDATION) == 0


@pytest.fixture(scope="module")
def cjk_dataset(tmp_path_factory):
    """Classes 猫 and 犬, converted; the conversion's own output (the card's note, if any) is returned too."""
    root = tmp_path_factory.mktemp("cjk")
    write_sample_data(root / "raw", layout="folders", n=12, classes=("猫", "犬"), seed=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert(str(root / "raw"), str(root / "data"), ConvertOptions(workers=1, max_side=64))
    return root / "data", caught


def test_the_card_shows_a_few_images_of_each_class(cjk_dataset):
    data, _ = cjk_dataset
    assert "![A few images of each class](samples.png)" in (data / "README.md").read_text()
    samples = Image.open(data / "samples.png")
    assert samples.width >= 4 * 96 and samples.height >= 2 * 96  # a row of 4 per class


def test_class_names_in_any_script_render_or_say_which_font_is_missing(cjk_dataset, tmp_path, caplog):
    data, caught_at_conversion = cjk_dataset
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preview_grid(str(data), str(tmp_path / "grid.png"), images=3)
    glyph_warnings = [w for w in caught_at_conversion + caught if "missing from font" in str(w.message)]
    assert not glyph_warnings, [str(w.message) for w in glyph_warnings]
    note = [r.getMessage() for r in caplog.records if r.getMessage().startswith("note: no installed font")]
    if len(figures.font_families()) > 1:  # a CJK font is installed: the names are drawn with it
        assert not note, note
    else:  # none here: the boxes are explained once per picture, naming the characters and a font to install
        assert len(note) == 1 and any(c in note[0] for c in "猫犬") and "fonts-noto-cjk" in note[0], note


def test_a_class_name_with_dollar_signs_is_drawn_as_written():
    """matplotlib would read `$\\bad$` as TeX and fail; a class name is plain text."""
    image = np.zeros((8, 8, 3), np.uint8)
    assert Image.open(io.BytesIO(figures.image_grid([("$\\bad{x}$ 50% off", [image])], 8))).size[0] > 8
