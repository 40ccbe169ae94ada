"""Kaggle-shaped corpora for `convert --labels`: a folder of real images named by id and a CSV file of their labels
in each shape Kaggle ships, written with the quirks real files have (a BOM, CRLF line ends, quoted fields, extra
columns, a trailing comma), plus an image without a row and a row without an image."""

from __future__ import annotations

import csv
import pathlib
from typing import NamedTuple

from tests.conftest import encode, noise_image


class Corpus(NamedTuple):
    src: pathlib.Path  # the folder to convert
    labels_csv: pathlib.Path
    labels: dict[str, frozenset[str]]  # each labelled image's path (relative to src) -> its classes
    unlabelled: tuple[str, ...]  # images without a row
    without_images: tuple[str, ...]  # ids of rows without an image


def write_image(path: pathlib.Path, seed: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(noise_image(24, 20, seed=seed), fmt))


def write_csv(
    path: pathlib.Path,
    header: list[str],
    rows: list[list[str]],
    *,
    bom: bool = False,
    crlf: bool = False,
    quoting: int = csv.QUOTE_MINIMAL,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n" if crlf else "\n", quoting=quoting)
        writer.writerows([header, *rows])


def cactus(root: pathlib.Path, n: int = 24) -> Corpus:
    """Aerial Cactus: `train/<hex>.jpg` and train.csv `id,has_cactus`, ids with their extension; a BOM, CRLF."""
    labels, rows = {}, []
    for i in range(n):
        name = f"{i * 7919:08x}.jpg"
        write_image(root / "train" / name, i)
        labels[name] = frozenset({str(i % 2)})
        rows.append([name, str(i % 2)])
    write_image(root / "train" / "stray.jpg", 999)
    rows.append(["gone.jpg", "1"])
    write_csv(root / "train.csv", ["id", "has_cactus"], rows, bom=True, crlf=True)
    return Corpus(root / "train", root / "train.csv", labels, ("stray.jpg",), ("gone.jpg",))


BREEDS = ("boston_bull", "dingo", "retriever,golden")


def dog_breed(root: pathlib.Path, n: int = 24) -> Corpus:
    """Dog Breed Identification: `train/<hex>.jpg` and labels.csv `id,breed` (ids without their extension), every
    field quoted, a breed holding a comma, and an extra column."""
    labels, rows = {}, []
    for i in range(n):
        identifier = f"d{i:04d}"
        write_image(root / "train" / f"{identifier}.jpg", 100 + i)
        labels[f"{identifier}.jpg"] = frozenset({BREEDS[i % 3]})
        rows.append([identifier, BREEDS[i % 3], f"photographer {i}"])
    write_csv(root / "labels.csv", ["id", "breed", "source"], rows, quoting=csv.QUOTE_ALL)
    return Corpus(root / "train", root / "labels.csv", labels, (), ())


TAGS = ("agriculture", "clear", "haze", "primary", "water")


def planet_tags(i: int) -> list[str]:
    """Image i's tags: one weather tag, then any of the others by the bits of i (some images have none)."""
    return [TAGS[1 + i % 2]] + [tag for bit, tag in enumerate(("agriculture", "primary", "water")) if i >> bit & 1]


def planet(root: pathlib.Path, n: int = 40) -> Corpus:
    """Planet: Understanding the Amazon: `train-jpg/train_<i>.jpg` and train_v2.csv `image_name,tags`,
    space-separated tags."""
    labels, rows = {}, []
    for i in range(n):
        write_image(root / "train-jpg" / f"train_{i}.jpg", 200 + i)
        labels[f"train_{i}.jpg"] = frozenset(planet_tags(i))
        rows.append([f"train_{i}", " ".join(planet_tags(i))])
    rows.append(["train_9999", "clear primary"])
    write_csv(root / "train_v2.csv", ["image_name", "tags"], rows)
    return Corpus(root / "train-jpg", root / "train_v2.csv", labels, (), ("train_9999",))


DISEASES = ("healthy", "multiple_diseases", "rust", "scab")


def plant_pathology(root: pathlib.Path, n: int = 24) -> Corpus:
    """Plant Pathology 2020: `images/Train_<i>.jpg` beside `images/Test_<i>.jpg` (no rows), and train.csv
    `image_id,healthy,multiple_diseases,rust,scab`: one 0/1 column per class, one 1 per row; CRLF."""
    labels, rows = {}, []
    for i in range(n):
        write_image(root / "images" / f"Train_{i}.jpg", 300 + i)
        labels[f"Train_{i}.jpg"] = frozenset({DISEASES[i % 4]})
        rows.append([f"Train_{i}"] + ["1" if k == i % 4 else "0" for k in range(4)])
    for i in range(3):
        write_image(root / "images" / f"Test_{i}.jpg", 400 + i)
    write_csv(root / "train.csv", ["image_id", *DISEASES], rows, crlf=True)
    return Corpus(root / "images", root / "train.csv", labels, tuple(f"Test_{i}.jpg" for i in range(3)), ())


FINDINGS = ("Cardiomegaly", "Effusion", "Infiltration", "No Finding")


def chest_findings(i: int) -> list[str]:
    found = [finding for bit, finding in enumerate(FINDINGS[:3]) if i >> bit & 1]
    return found or ["No Finding"]


def chest_xray(root: pathlib.Path, n: int = 32) -> Corpus:
    """ChestX-ray14: PNGs in `images_00K/images/` folders and Data_Entry_2017.csv with a `|`-separated
    `Finding Labels` column among others, and a trailing comma on every line (a column without a name)."""
    labels, rows = {}, []
    for i in range(n):
        name = f"{i:08d}_000.png"
        path = f"images_00{1 + i % 2}/images/{name}"
        write_image(root / "images" / path, 500 + i, "PNG")
        labels[path] = frozenset(chest_findings(i))
        rows.append([name, "|".join(chest_findings(i)), "0", str(i), ""])
    write_csv(root / "Data_Entry_2017.csv", ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", ""], rows)
    return Corpus(root / "images", root / "Data_Entry_2017.csv", labels, (), ())
