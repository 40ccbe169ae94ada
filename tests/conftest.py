"""Fixtures that build small, real image corpora on disk (JPEG, PNG, archives, IDX) for the tests."""

from __future__ import annotations

import gzip
import io
import pathlib
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from shardflow.testing.sample_data import write_sample_data


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
def pets_dataset(kaggle_dir, tmp_path_factory) -> pathlib.Path:
    """The 60 Kaggle-named samples converted with the defaults (passthrough, train/validation/test) by 2 workers,
    named "pets". Read-only: copy it to change it."""
    out = tmp_path_factory.mktemp("out") / "pets"
    assert convert_cli(kaggle_dir, out, "--workers", "2", "--name", "pets") == 0
    return out


@pytest.fixture(scope="session")
def tiny_pets(kaggle_dir, tmp_path_factory) -> pathlib.Path:
    """The 60 Kaggle-named samples converted at --max-side 64 (train/validation/test): for runs that only train a
    few steps, and for commands that must refuse before they read anything. Read-only: copy it to change it."""
    out = tmp_path_factory.mktemp("tiny") / "data"
    assert convert_cli(kaggle_dir, out, "--max-side", "64", "--workers", "1") == 0
    return out


@pytest.fixture(scope="session")
def pets_in_shards(kaggle_dir, tmp_path_factory) -> pathlib.Path:
    """The 60 Kaggle-named samples, passthrough, split train/test, several 0.3 MB shards per split (with their
    record indexes). Read-only: copy it to change it."""
    out = tmp_path_factory.mktemp("shards") / "pets"
    assert (
        convert_cli(kaggle_dir, out, "--splits", "train=0.5,test=0.5", "--shard-size-mb", "0.3", "--workers", "1") == 0
    )
    return out


@pytest.fixture(scope="session")
def fixed_pets(kaggle_dir, tmp_path_factory) -> pathlib.Path:
    """The 60 Kaggle-named samples stored at exactly 40x56 (HxW), split train/test. Read-only."""
    out = tmp_path_factory.mktemp("fixed") / "fixed"
    assert convert_cli(kaggle_dir, out, "--size", "40x56", "--splits", "train=0.5,test=0.5", "--workers", "1") == 0
    return out


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory) -> pathlib.Path:
    """800 sample photos named like Kaggle's (cat.0.jpg ... dog.399.jpg, seed 11), written once: at ~17 ms a photo
    the slowest corpus to make, so the tests that need many share it (`photo_subset` copies fewer)."""
    root = tmp_path_factory.mktemp("photos") / "raw"
    write_sample_data(root, layout="kaggle", n=800, seed=11)
    return root


def photo_subset(photos: pathlib.Path, out: pathlib.Path, per_class: int) -> pathlib.Path:
    """A folder with copies of the first `per_class` photos of each class: the files write_sample_data(n=2*per_class)
    writes with the same seed (an image does not depend on n)."""
    out.mkdir(parents=True)
    for name in ("cat", "dog"):
        for i in range(per_class):
            shutil.copyfile(photos / f"{name}.{i}.jpg", out / f"{name}.{i}.jpg")
    return out


@pytest.fixture(scope="session")
def folders_dir(tmp_path_factory) -> pathlib.Path:
    """flower_photos-like: flower_photos/<class>/<i>.jpg plus LICENSE.txt beside the class folders."""
    root = tmp_path_factory.mktemp("flowers")
    photos = root / "flower_photos"
    write_sample_data(photos, layout="folders", n=30, classes=("daisy", "roses", "tulips"), seed=2)
    (photos / "LICENSE.txt").write_text("All images are licensed under CC-BY.\n")
    return photos


def convert_cli(src: pathlib.Path, out: pathlib.Path, *flags: str) -> int:
    """`shardflow convert SRC OUT FLAGS...` in this process (the CLI is imported on first use, not with conftest)."""
    from shardflow.cli import main

    return main(["convert", str(src), str(out), *flags])


def free_ports(count: int) -> list[int]:
    """Ports free on localhost right now, for servers that must be told their port before they start (TF_CONFIG
    names every worker's). Another process can take one before the server binds it: such tests retry
    (`retry_on_port_clash`); servers that can bind port 0 and say which port they got should do that instead."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


PORT_CLASH = ("Address already in use", "Could not start gRPC server")  # what servers say of a port taken


def retry_on_port_clash(attempt, tries: int = 3):
    """`attempt()` (which takes fresh `free_ports` for its servers), again while it returns None, up to `tries`
    times: it returns None when a server could not bind its port (another process took it meanwhile)."""
    for _ in range(tries):
        outcome = attempt()
        if outcome is not None:
            return outcome
    pytest.fail(f"{tries} tries, and each time a port was taken before the server could bind it")


def ctrl_c_as_in_a_terminal(argv: Sequence[str]) -> list[str]:
    """`argv` started with SIGINT's default, as a command typed in a terminal is: a shell starts background jobs
    (`make test &`) with SIGINT ignored, and Python then never raises KeyboardInterrupt. A small Python resets it and
    execs `argv` (the same pid). Not `preexec_fn`: that makes `subprocess` fork this process, and a fork of a pytest
    process whose gRPC has polled (Beam's runners ran in it) can abort in the child before it execs ("Epoll1Poller
    ... epoll_wait error: Bad file descriptor": gRPC restarts its poller in the child, whose epoll file descriptor
    the child then closes; grpc/grpc#43055)."""
    reset = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", reset, *argv]


def last_line(text: str) -> str:
    """A command's last line of output (a progress bar's carriage returns count as line ends)."""
    return text.replace("\r", "\n").strip().splitlines()[-1]


def dead_port() -> socket.socket:
    """A socket bound to a localhost port that never listens: connecting to its port is refused for as long as the
    socket stays open (no other process can bind the port meanwhile). Close it when done."""
    holder = socket.socket()
    holder.bind(("localhost", 0))
    return holder


def wait_for_output(path: pathlib.Path, pattern: str, process: subprocess.Popen, timeout: float = 90) -> re.Match:
    """Wait until the file `path` (where `process` writes its output) matches the regular expression `pattern`;
    fails the test when the process exits first or `timeout` seconds pass (no blocking read on a pipe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace")) if path.exists() else None
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(
                f"{process.args}: exited ({process.returncode}) before printing {pattern!r}: "
                f"{path.read_text(errors='replace')[-3000:] if path.exists() else ''}"
            )
        time.sleep(0.1)
    pytest.fail(f"{process.args}: printed no {pattern!r} in {timeout:.0f} s")
