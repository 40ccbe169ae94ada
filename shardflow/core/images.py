"""Validate one input image and turn it into the bytes (or pixels) a record stores.

The conversion runs this on every input; prediction runs it on every file it is given, with the dataset's
recorded options, so a model sees the same pixels from a file as from its record. It needs no Beam and no TF.

Valid RGB JPEGs that need no change are kept byte for byte ("passthrough"); anything else that PIL can decode
(PNG/GIF/BMP/WebP, CMYK, grayscale, alpha, 16-bit, EXIF-rotated) is converted; the rest raises `Rejected`
with a reason a person can act on.

A JPEG whose compressed data is damaged can still decode, garbled, with a libjpeg warning ("Corrupt JPEG data:
521 extraneous bytes before marker 0xd9") that PIL keeps to itself (its decoder silences libjpeg's messages):
`jpeg_warning` asks libjpeg-turbo again through simplejpeg, which reports them, and `PreparedImage.warning` carries
it for the conversion to reject the input (or keep it, with --keep-damaged-jpegs).
"""

from __future__ import annotations

import dataclasses
import io
import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from shardflow.core.duplicates import ImageHashes, image_hashes, key_reduction

MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold (~90 MP)
MAX_FILE_BYTES = 256 * 1024 * 1024
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_LEVELS = np.arange(256, dtype=np.float64)
_SQUARES = np.square(_LEVELS)
_SMALLEST = {"colorspace": "GRAY", "min_height": 1, "min_width": 1}  # simplejpeg: luma at 1/8 scale
_JPEG_FORMATS = ("JPEG", "MPO")  # PIL's names for JPEG files (MPO: a camera's JPEG with extra pictures after it)


class Rejected(Exception):
    """An input that cannot become a record; the message is the reason written to rejects.jsonl."""


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How images are stored: see `shardflow convert --help`. `size` (height, width; an int for a square) stores
    every image at exactly that size, stretched, or centre-cropped to its aspect first (`crop_to_aspect_ratio`)."""

    channels: int = 3
    image_format: str = "passthrough"
    max_side: int | None = None
    quality: int = 95
    max_pixels: int = MAX_PIXELS
    max_file_bytes: int = MAX_FILE_BYTES
    size: tuple[int, int] | None = None
    crop_to_aspect_ratio: bool = False

    def __post_init__(self):
        if self.size is not None:
            object.__setattr__(self, "size", parse_size(self.size, "size"))
        if self.size is not None and self.max_side is not None:
            raise ValueError(
                "`size` and `max_side` exclude each other: `size` stores every image at exactly that "
                "size, `max_side` only bounds the longer side; choose one"
            )
        if self.crop_to_aspect_ratio and self.size is None:
            raise ValueError("`crop_to_aspect_ratio` goes with `size` (the aspect ratio it crops to)")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError(f"`max_side` must be a positive number of pixels, got {self.max_side}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"`quality` must be between 1 and 100, got {self.quality}")


def parse_size(size: int | str | Sequence[int], parameter: str = "size") -> tuple[int, int]:
    """(height, width) from an int or "S" (square), "HxW", or a (height, width) pair; ValueError naming the
    `parameter` unless both are whole numbers of pixels from 1 to 8192."""
    if isinstance(size, str):
        parts = size.lower().split("x")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"`{parameter}` must be S or HxW in pixels (e.g. 150 or 120x160), got {size!r}")
        size = [int(p) for p in parts]
    pair = (size, size) if isinstance(size, int) else tuple(size) * (2 if len(size) == 1 else 1)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 8192 for s in pair):
        raise ValueError(f"`{parameter}` must be one or two whole numbers of pixels from 1 to 8192, got {size!r}")
    return pair


class ImageStats(NamedTuple):
    """What the split statistics need of one stored image: its size, how it was stored, its pixel sums."""

    width: int
    height: int
    passthrough: bool
    channel_sum: tuple[float, ...]
    channel_sumsq: tuple[float, ...]
    num_pixels: int


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """What a record stores (`data`: encoded bytes, or uint8 pixels for raw), its statistics and, when asked
    for, the decoded image's duplicate keys (taken before any resize)."""

    data: bytes | np.ndarray
    stats: ImageStats
    hashes: ImageHashes | None = None
    warning: str | None = None  # libjpeg's warning for a JPEG that decodes only with one (`jpeg_warning`)


def prepare_encoded(data: bytes, options: ImageOptions, hashes: bool = False) -> PreparedImage:
    """Validate an encoded image file and prepare what its record stores (with its `ImageHashes` if `hashes`, and
    libjpeg's `warning` for a damaged JPEG that still decodes); raises `Rejected`."""
    if not data:
        raise Rejected("empty file (0 bytes)")
    if len(data) > options.max_file_bytes:
        raise Rejected(f"file too large: {len(data)} bytes exceeds the {options.max_file_bytes}-byte limit")
    image = _open(data, options)
    keep_bytes = (
        options.image_format == "passthrough"
        and image.format == "JPEG"
        and image.mode == ("RGB" if options.channels == 3 else "L")
        and _orientation(image) == 1
        and not _too_big(image.size, options.max_side)
        and (options.size is None or image.size == options.size[::-1])
        and data.rstrip(b"\x00").endswith(b"\xff\xd9")  # no end-of-image marker: TF refuses what PIL repairs
    )
    size = image.size
    if keep_bytes and (reduction := key_reduction(size)) > 1:
        # Decoded at the DCT scale (1/2, 1/4 or 1/8) nearest the duplicate keys' resolution: the entropy-coded data
        # is decoded in full at any scale (truncation and corruption still show), most of the IDCT is skipped,
        # and the statistics and keys are taken from the smaller image.
        image.draft(image.mode, (size[0] // reduction, size[1] // reduction))
    elif options.max_side and image.format == "JPEG":
        image.draft(image.mode, _fit(size, options.max_side))  # decode at a reduced DCT scale
    elif options.size and image.format == "JPEG":
        image.draft(
            image.mode, _covering(size, options.size, options.crop_to_aspect_ratio, _orientation(image) in _TURNED)
        )
    image, pixels, warning = _load(data, image)
    if keep_bytes:
        keys = image_hashes(image, pixels) if hashes else None
        prepared = _prepared(data, image, passthrough=True, size=size, hashes=keys)
    else:
        if _orientation(image) != 1:
            image = ImageOps.exif_transpose(image)
        prepared = prepare_pixels(image, options, hashes)
    return dataclasses.replace(prepared, warning=warning)


def _load(data: bytes, image: Image.Image) -> tuple[Image.Image, np.ndarray | None, str | None]:
    """`image` decoded (at its draft's DCT scale), its pixels as an array (the bytes `Image.tobytes` gives) when
    libjpeg-turbo decoded them, and libjpeg's warning if it is a JPEG that has one.

    An L or RGB JPEG without an EXIF turn is decoded by libjpeg-turbo through simplejpeg, strictly: PIL's pixels
    (PIL's libjpeg-turbo at the same scale, with the same defaults) and the check for warnings in one pass. PIL
    decodes anything else, and a JPEG that libjpeg warns about or refuses, for `_decode` and `jpeg_warning` to
    say why."""
    if image.format == "JPEG" and image.mode in ("RGB", "L") and _orientation(image) == 1:
        try:
            pixels = simplejpeg.decode_jpeg(
                data,
                colorspace="RGB" if image.mode == "RGB" else "GRAY",
                min_height=image.height,
                min_width=image.width,
            )
        except ValueError:
            pixels = None
        if pixels is not None and pixels.shape[:2] == (image.height, image.width):  # else another DCT scale
            decoded = Image.frombuffer(image.mode, image.size, pixels, "raw", image.mode, 0, 1)
            decoded.info = image.info  # what a re-encode carries over (a JPEG comment, the DPI), as from PIL's
            return decoded, pixels, None
    _decode(image)
    return image, None, jpeg_warning(data) if image.format in _JPEG_FORMATS else None


def jpeg_warning(data: bytes) -> str | None:
    """libjpeg's warning when it decodes this JPEG, as a reason ("corrupt JPEG data: 521 extraneous bytes before
    marker 0xd9", "corrupt JPEG data: premature end of data segment", ...); None when it decodes without one, or
    not at all (that is an error, the caller's decoder reports it).

    Decoded at 1/8 scale: every scan's entropy-coded data is still read in full (where the damage shows), most of
    the inverse DCT is skipped."""
    try:
        simplejpeg.decode_jpeg(data, **_SMALLEST)  # strict: the first warning raises
        return None
    except ValueError as error:
        warning = str(error)
    try:
        simplejpeg.decode_jpeg(data, strict=False, **_SMALLEST)
    except ValueError:
        return None  # an error, not a warning
    return warning[:1].lower() + warning[1:]


def prepare_pixels(image: Image.Image, options: ImageOptions, hashes: bool = False) -> PreparedImage:
    """Convert a decoded image to 8-bit L/RGB, take its `ImageHashes` if `hashes`, resize it (per `max_side` or
    `size`) and encode it."""
    image = _normalize_mode(image, options.channels)
    keys = image_hashes(image) if hashes else None
    if options.max_side and _too_big(image.size, options.max_side):
        image = image.resize(_fit(image.size, options.max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    elif options.size and image.size != options.size[::-1]:
        box = central_crop_box(image.size, options.size) if options.crop_to_aspect_ratio else None
        image = image.resize(options.size[::-1], Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    if options.image_format == "raw":
        return _prepared(
            np.asarray(image).reshape(image.height, image.width, options.channels), image, False, hashes=keys
        )
    buffer = io.BytesIO()
    if options.image_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=options.quality)
    return _prepared(buffer.getvalue(), image, passthrough=False, hashes=keys)


def _open(data: bytes, options: ImageOptions) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise Rejected(f"decompression bomb: {error}") from None
    except Image.UnidentifiedImageError:
        raise Rejected("not an image: unrecognized file format") from None
    except Exception as error:  # PIL raises many types on malformed headers
        raise Rejected(f"unreadable image header: {error}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise Rejected(f"invalid image size {width}x{height}")
    if width * height > options.max_pixels:
        raise Rejected(
            f"decompression bomb: {width}x{height} = {width * height / 1e6:.1f} MP exceeds the "
            f"{options.max_pixels / 1e6:.1f} MP limit"
        )
    return image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: treat as unrotated, the pixels are what matters
        return 1


def _decode(image: Image.Image) -> None:
    try:
        image.load()
    except Exception as error:  # truncated data, broken streams, bad palettes...
        raise Rejected(f"corrupt or truncated {image.format or 'image'} data: {error}") from None


def _normalize_mode(image: Image.Image, channels: int) -> Image.Image:
    """8-bit L or RGB: 16-bit scaled down, alpha and palettes flattened, CMYK converted."""
    if image.mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image).astype(np.float32)
        scale = 255.0 / 65535.0 if pixels.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(pixels * scale + 0.5, 0, 255).astype(np.uint8), "L")
    target = "RGB" if channels == 3 else "L"
    return image if image.mode == target else image.convert(target)


def _too_big(size: tuple[int, int], max_side: int | None) -> bool:
    return max_side is not None and 0 < max_side < max(size)


def central_crop_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """PIL's (left, upper, right, lower) of the largest central window of an image of `size` (width, height)
    with the aspect ratio of `target` (height, width); rounded like the reader's `central_crop_window`."""
    width, height = size
    aspect = target[1] / target[0]
    crop_w = max(1, min(width, round(height * aspect)))
    crop_h = max(1, min(height, round(width / aspect)))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def _covering(
    size: tuple[int, int], output_size: tuple[int, int], crop_to_aspect_ratio: bool, turned: bool
) -> tuple[int, int]:
    """The smallest (width, height) a JPEG of `size` may be drafted to and still cover `output_size` (height,
    width; after its crop when `crop_to_aspect_ratio`, and its EXIF turn when `turned`)."""
    target = output_size[::-1]  # (width, height)
    if turned:
        target = target[::-1]
    if not crop_to_aspect_ratio:
        return target
    crop = central_crop_box(size, target[::-1])
    scale = max(target[0] / (crop[2] - crop[0]), target[1] / (crop[3] - crop[1]))
    return min(size[0], math.ceil(size[0] * scale)), min(size[1], math.ceil(size[1] * scale))


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _prepared(
    data: bytes | np.ndarray,
    image: Image.Image,
    passthrough: bool,
    size: tuple[int, int] | None = None,
    hashes: ImageHashes | None = None,
) -> PreparedImage:
    """What the record stores, its size (`size` when `image` was decoded at a reduced scale), and pixel
    statistics from PIL's per-band histogram, weighted as if taken at full size."""
    width, height = size or image.size
    histogram = np.asarray(image.histogram(), dtype=np.float64).reshape(-1, 256)
    histogram *= (width * height) / (image.width * image.height)
    return PreparedImage(
        data,
        ImageStats(
            width=width,
            height=height,
            passthrough=passthrough,
            channel_sum=tuple((histogram @ _LEVELS).tolist()),
            channel_sumsq=tuple((histogram @ _SQUARES).tolist()),
            num_pixels=width * height,
        ),
        hashes,
    )


def prepare(payload: bytes | np.ndarray, options: ImageOptions, hashes: bool = False) -> PreparedImage:
    """An encoded file (`prepare_encoded`) or decoded pixels (`prepare_pixels`), with its `ImageHashes` if
    `hashes`; every failure, even a decoder's bug on hostile input, is `Rejected`: one bad file costs that file,
    never the run."""
    try:
        if isinstance(payload, np.ndarray):
            return prepare_pixels(Image.fromarray(payload), options, hashes)
        return prepare_encoded(payload, options, hashes)
    except Rejected:
        raise
    except Exception as error:
        raise Rejected(f"could not decode: {type(error).__name__}: {error}") from None
