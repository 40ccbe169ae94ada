"""Validation and conversion of single input images: what is kept, how, and what is rejected why."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from shardflow.core.images import ImageOptions, Rejected, prepare_encoded
from tests.conftest import encode, noise_image

RGB = ImageOptions()


def decoded(prepared) -> np.ndarray:
    return tf.io.decode_image(prepared.data, expand_animations=False).numpy()


def test_plain_jpeg_is_kept_byte_for_byte():
    data = encode(noise_image(64, 48), quality=90)
    prepared = prepare_encoded(data, RGB)
    assert prepared.stats.passthrough and prepared.data == data
    assert (prepared.stats.width, prepared.stats.height) == (64, 48)


def test_progressive_jpeg_is_kept_byte_for_byte():
    data = encode(noise_image(64, 48), progressive=True)
    assert prepare_encoded(data, RGB).data == data


def smooth_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Three gradients, one per channel (in `mode`; RGBA with alpha 200): JPEG keeps such pixels within a few
    levels, where it moves random noise's colours by ~50 (chroma subsampling)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)], axis=-1
    ).astype(np.uint8)
    if mode == "RGBA":
        return Image.fromarray(np.concatenate([rgb, np.full((height, width, 1), 200, np.uint8)], axis=-1), "RGBA")
    return Image.fromarray(rgb, "RGB").convert(mode)


@pytest.mark.parametrize(
    "data, kind",
    [
        (encode(smooth_image(40, 30), "PNG"), "png"),
        (encode(smooth_image(40, 30), "GIF"), "gif"),
        (encode(smooth_image(40, 30), "BMP"), "bmp"),
        (encode(smooth_image(40, 30), "WEBP"), "webp"),
        (encode(smooth_image(40, 30, mode="CMYK"), "JPEG"), "cmyk"),
        (encode(smooth_image(40, 30, mode="L"), "JPEG"), "grayscale"),
        (encode(smooth_image(40, 30, mode="RGBA"), "PNG"), "rgba"),
        (encode(Image.fromarray(np.full((30, 40), 40000, np.uint16)), "PNG"), "16-bit"),
    ],
)
def test_other_formats_and_modes_become_rgb_jpeg(data, kind):
    prepared = prepare_encoded(data, RGB)
    assert not prepared.stats.passthrough
    assert prepared.data[:2] == b"\xff\xd8" and Image.open(io.BytesIO(prepared.data)).format == "JPEG", kind
    assert Image.open(io.BytesIO(prepared.data)).mode == "RGB"
    pixels = decoded(prepared)
    assert pixels.shape == (30, 40, 3), kind
    if kind == "16-bit":
        assert abs(int(pixels.mean()) - 40000 * 255 // 65535) <= 2  # scaled, not clipped to white
        return
    # the source's own pixels (PIL's conversion to RGB) through one JPEG encode at quality 95: within 3.4 levels
    # here, where the same image with its channels in another order is 25 away, turned upside down 93
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    assert np.abs(pixels - expected).mean() < 5, kind


def test_exif_rotation_is_applied():
    image = noise_image(60, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    prepared = prepare_encoded(encode(image, exif=exif.tobytes()), RGB)
    assert not prepared.stats.passthrough
    assert decoded(prepared).shape == (60, 20, 3)


def test_one_channel_option():
    prepared = prepare_encoded(encode(noise_image(40, 30)), ImageOptions(channels=1))
    assert decoded(prepared).shape == (30, 40, 1)


@pytest.mark.parametrize("fmt, suffix", [("jpeg", b"\xff\xd8"), ("png", b"\x89PNG")])
def test_reencoding_formats(fmt, suffix):
    prepared = prepare_encoded(encode(noise_image(40, 30)), ImageOptions(image_format=fmt))
    assert prepared.data.startswith(suffix)


def test_raw_format_stores_pixels():
    prepared = prepare_encoded(encode(noise_image(40, 30), "PNG"), ImageOptions(image_format="raw"))
    assert prepared.data.shape == (30, 40, 3) and prepared.data.dtype == np.uint8


def test_max_side_downscales_keeping_aspect():
    prepared = prepare_encoded(encode(noise_image(400, 200)), ImageOptions(max_side=100))
    assert (prepared.stats.width, prepared.stats.height) == (100, 50)
    assert decoded(prepared).shape == (50, 100, 3)


def three_bands(width: int = 300, height: int = 100) -> Image.Image:
    """Black sides and a white centre band a third of the width wide."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, width // 3 : 2 * width // 3] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("fmt", ["passthrough", "raw"])
def test_size_stores_exactly_that_size_stretched_like_keras(fmt):
    prepared = prepare_encoded(encode(three_bands(), quality=100), ImageOptions(image_format=fmt, size=(40, 60)))
    pixels = prepared.data if fmt == "raw" else decoded(prepared)
    assert pixels.shape == (40, 60, 3) and (prepared.stats.width, prepared.stats.height) == (60, 40)
    assert not prepared.stats.passthrough
    assert pixels[:, :15].max() < 40 and pixels[:, 25:35].min() > 215  # stretched: the black sides stay


def test_size_with_crop_to_aspect_ratio_keeps_the_centre():
    prepared = prepare_encoded(
        encode(three_bands(), quality=100), ImageOptions(image_format="raw", size=32, crop_to_aspect_ratio=True)
    )
    assert prepared.data.shape == (32, 32, 3) and prepared.data[:, 3:-3].min() > 215


def test_size_follows_exif_orientation_and_keeps_a_jpeg_already_that_size():
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees: 40 wide, 80 high
    turned = prepare_encoded(encode(noise_image(80, 40), exif=exif.tobytes()), ImageOptions(size=(80, 40)))
    assert decoded(turned).shape == (80, 40, 3)
    data = encode(noise_image(60, 40))
    assert prepare_encoded(data, ImageOptions(size="40x60")).data == data


def test_size_is_checked():
    assert ImageOptions(size="120x160").size == (120, 160) and ImageOptions(size=[150]).size == (150, 150)
    with pytest.raises(ValueError, match="`size` and `max_side` exclude each other"):
        ImageOptions(size=150, max_side=200)
    with pytest.raises(ValueError, match="`crop_to_aspect_ratio` goes with `size`"):
        ImageOptions(crop_to_aspect_ratio=True)
    for bad in ("150x", "0", "ax3", (10, 20, 30)):
        with pytest.raises(ValueError, match="`size` must be"):
            ImageOptions(size=bad)


def truncated_jpeg() -> bytes:
    data = encode(noise_image(200, 200))
    return data[: len(data) // 2]


def bomb_png() -> bytes:
    return encode(Image.new("1", (10_000, 9_500)), "PNG")  # 95 MP of one-bit pixels: a few kB on disk


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (truncated_jpeg(), "truncated"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), "not an image"),  # Thumbs.db (an OLE2 file)
        (b"hello, I am a text file", "not an image"),
        (bomb_png(), "decompression bomb"),
    ],
)
def test_bad_inputs_are_rejected_with_a_reason(data, reason):
    with pytest.raises(Rejected, match=reason):
        prepare_encoded(data, RGB)


def test_file_size_limit():
    with pytest.raises(Rejected, match="too large"):
        prepare_encoded(encode(noise_image(64, 64)), ImageOptions(max_file_bytes=100))


TINY_SIZES = [(1, 1), (1, 9), (9, 1), (2, 1), (1, 300)]


@pytest.mark.parametrize("size", TINY_SIZES)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_tiny_and_thin_images_are_kept(size, fmt):
    prepared = prepare_encoded(encode(noise_image(*size), fmt), RGB)
    assert (prepared.stats.width, prepared.stats.height) == size
    assert decoded(prepared).shape == (size[1], size[0], 3)


def test_tiny_and_thin_images_convert_load_and_train(tmp_path):
    from shardflow.cli import main
    from shardflow.core import metadata
    from shardflow.pipeline import load

    src = tmp_path / "src"
    src.mkdir()
    for i, size in enumerate(TINY_SIZES * 2):
        (src / f"{('cat', 'dog')[i % 2]}.{i}.{'jpg' if i < 5 else 'png'}").write_bytes(
            encode(noise_image(*size, seed=i), "JPEG" if i < 5 else "PNG")
        )
    out = tmp_path / "out"
    assert main(["convert", str(src), str(out), "--splits", "train=1", "--workers", "1"]) == 0
    info = metadata.read(str(out))
    assert info.num_records == 10 and info.num_rejected == 0
    images, labels = next(iter(load(str(out), "train", batch_size=10, image_size=8)))
    assert images.shape == (10, 8, 8, 3) and labels.shape == (10,)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 3)),
            tf.keras.layers.Rescaling(1 / 255),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(2),
        ]
    )
    model.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(load(str(out), "train", batch_size=5, image_size=8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
