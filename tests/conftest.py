"""Fixtures that build small, real image corpora on disk (JPEG, PNG, archives, IDX) for the tests."""
from __future__ import annotations

import gzip
import io
import pathlib
import socket
import struct

import numpy as np
import pytest
from PIL import Image

from shardflow.sample_data import write_sample_data


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noise_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def write_idx(folder: pathlib.Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """MNIST's IDX format: big-endian magic (0x0803 images / 0x0801 labels), dimensions, then uint8 data."""
    image_bytes = struct.pack(">IIII", 0x0803, *images.shape) + images.astype(np.uint8).tobytes()
    label_bytes = struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes()
    suffix = ".gz" if gz else ""
    opener = gzip.compress if gz else bytes
    (folder / f"{prefix}-images-idx3-ubyte{suffix}").write_bytes(opener(image_bytes))
    (folder / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(opener(label_bytes))


@pytest.fixture(scope="session")
def kaggle_dir(tmp_path_factory) -> pathlib.Path:
    """60 sample JPEGs named like Kaggle's dogs-vs-cats train/ (cat.0.jpg, dog.0.jpg, ...)."""
    root = tmp_path_factory.mktemp("kaggle") / "train"
    write_sample_data(root, layout="kaggle", n=60, seed=1)
    return root


@pytest.fixture(scope="session")
def folders_dir(tmp_path_factory) -> pathlib.Path:
    """flower_photos-like: flower_photos/<class>/<i>.jpg plus LICENSE.txt beside the class folders."""
    root = tmp_path_factory.mktemp("flowers")
    photos = root / "flower_photos"
    write_sample_data(photos, layout="folders", n=30, classes=("daisy", "roses", "tulips"), seed=2)
    (photos / "LICENSE.txt").write_text("All images are licensed under CC-BY.\n")
    return photos


def free_ports(count: int) -> list[int]:
    """Ports free on localhost right now (for servers the tests start)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
