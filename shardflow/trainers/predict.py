"""`shardflow evaluate` and `shardflow predict`: use a finished run on a dataset split, or on image files.

Files go through the run's `Preprocessing` (the conversion's preparation with the dataset's options, then the
reader's parse + decode + resize), so a file and its record give the same probabilities. A file that cannot be
read is reported with its reason; the others are predicted. A multi-label model's predictions name every class
above a threshold (`tags`); `write_submission` writes them in the shape of the CSV file the dataset's labels came
from (`convert --labels`), which is the shape Kaggle expects back.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from shardflow.core import metadata
from shardflow.core.images import IMAGE_EXTENSIONS
from shardflow.core.shards import stored_records
from shardflow.pipeline import Preprocessing, damaged_shards_named, load  # (registers Augment, Normalize)
from shardflow.pipeline import preprocessing as preprocessing_lib
from shardflow.trainers import models
from shardflow.trainers.options import THRESHOLD
from shardflow.trainers.train import MODEL_FILE, RUN_FILE

BATCH_SIZE = 64
_DIGITS = re.compile(r"(\d+)")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One input's class probabilities, or why it could not be read (`problem`, like a line of rejects.jsonl)."""

    path: str
    probabilities: list[float] | None  # per class
    class_name: str | None  # the most probable class
    problem: str | None = None
    tags: tuple[str, ...] | None = None  # multi-label: the classes above the threshold, most probable first

    @property
    def confidence(self) -> float:
        return max(self.probabilities) if self.probabilities else 0.0

    def sentence(self) -> str:
        if self.problem:
            return f"{self.path}: not predicted: {self.problem}"
        if self.tags is not None:
            return (
                f"{self.path}: "
                + (", ".join(self.tags) if self.tags else "no class")
                + f" (most probable: {self.class_name} {self.confidence:.0%})"
            )
        return f"{self.path}: this image is {self.confidence:.0%} {self.class_name}"


def run_info(run: str) -> dict:
    """A finished run's run.json: class names, image size, channels, model name, options."""
    model_path, run_path = os.path.join(run, MODEL_FILE), os.path.join(run, RUN_FILE)
    if not os.path.exists(model_path) or not os.path.exists(run_path):
        raise FileNotFoundError(
            f"{run}: not a finished training run (no {MODEL_FILE} and {RUN_FILE}); create one with `shardflow train`"
        )
    with open(run_path) as f:
        return json.load(f)


def run_preprocessing(run: str) -> Preprocessing:
    """The preprocessing a run's model was trained with (its preprocessing.json)."""
    path = os.path.join(run, preprocessing_lib.FILE)
    if os.path.exists(path):
        return Preprocessing.read(path)
    info = run_info(run)  # a run from before preprocessing.json: its dataset still says how images were stored
    size = info["image_size"]
    return Preprocessing.of_dataset(metadata.read(info["data_dir"]), (size, size))


def run_labels_file(run: str) -> metadata.LabelsFile | None:
    """The CSV file the labels of a run's dataset came from (`convert --labels`), as its run.json records it."""
    found = run_info(run).get("labels_file")
    return None if found is None else metadata.LabelsFile(**found | {"label_columns": tuple(found["label_columns"])})


def load_run(run: str) -> tuple[keras.Model, Preprocessing]:
    """The best model of a run folder, and the preprocessing it expects."""
    preprocessing = run_preprocessing(run)
    return keras.models.load_model(os.path.join(run, MODEL_FILE)), preprocessing


def evaluate(run: str, data_dir: str, split: str = metadata.TEST) -> dict[str, float | str]:
    """Loss and accuracy of a run's model on a split of a converted dataset (multi-label: also the macro AUC and F1,
    `models.metrics_for`)."""
    model, preprocessing = load_run(run)
    info = metadata.read(data_dir)
    if info.class_names != preprocessing.class_names:
        raise ValueError(
            f"{data_dir} has classes {list(info.class_names)}, the model was trained on "
            f"{list(preprocessing.class_names)}"
        )
    trained = run_info(run).get("multi_label", False)
    if info.multi_label != trained:
        kinds = {True: "multi-label", False: "single-label"}
        raise ValueError(
            f"{data_dir} is {kinds[info.multi_label]}, the model was trained on a {kinds[trained]} dataset"
        )
    n = len(info.class_names)
    model.compile(loss=models.loss_for(n, info.multi_label), metrics=models.metrics_for(n, info.multi_label))
    with damaged_shards_named(data_dir):
        scores = model.evaluate(
            load(
                data_dir,
                split,
                batch_size=BATCH_SIZE,
                image_size=preprocessing.image_size,
                crop_to_aspect_ratio=preprocessing.crop_to_aspect_ratio,
            ),
            verbose=0,
            return_dict=True,
        )
    return {
        "split": split,
        **{name: float(value) for name, value in scores.items()},
        "num_examples": info.split(split).num_examples,
    }


def predict(
    run: str, inputs: Sequence[str], split: str = metadata.TEST, threshold: float = THRESHOLD
) -> list[Prediction]:
    """Class probabilities for image files, folders of images, or a converted dataset's split (in stored order);
    inputs that cannot be read come back with their `problem` instead. A multi-label model's also name the
    classes above `threshold` (`tags`)."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"`threshold` must be between 0 and 1, got {threshold:g}")
    model, preprocessing = load_run(run)
    names = preprocessing.class_names
    multi = run_info(run).get("multi_label", False)
    predictions = []
    for paths, images, problems in _batches(inputs, preprocessing, split):
        outputs = iter(_probabilities(model, images))
        for path, problem in zip(paths, problems):
            if problem:
                predictions.append(Prediction(path, None, None, problem))
            else:
                probabilities = next(outputs)
                tags = (
                    tuple(names[i] for i in np.argsort(-probabilities, kind="stable") if probabilities[i] > threshold)
                    if multi
                    else None
                )
                predictions.append(
                    Prediction(path, probabilities.tolist(), names[int(np.argmax(probabilities))], tags=tags)
                )
    return predictions


def write_submission(
    predictions: Sequence[Prediction],
    path: str,
    class_names: Sequence[str],
    labels_file: metadata.LabelsFile | None = None,
) -> None:
    """Kaggle's submission format, a row per input in the order of its id (numbers as numbers: 1, 2, ..., 10);
    empty values for an input that could not be read.

    Without `labels_file` (labels from file names or folders): `id,label`, the id from the file name (123.jpg ->
    123). With the CSV file the dataset's labels came from, its own shape: its id column (ids with their
    extension if it gave them so), then its label columns. One rule for a single label column, either way
    (`label_meaning` says it): with two classes, the probability of the second class in class order (dogs-vs-cats
    `id,label`: P(dog); Aerial Cactus `id,has_cactus`: P(1)), with more, the most probable class name; for a
    multi-label model the tags above the threshold joined by the file's separator (Planet `image_name,tags`:
    space-separated; ChestX-ray14: `|`). For one 0/1 column per class, each class's probability, in its column
    order (Plant Pathology)."""
    id_column, columns = _submission_columns(labels_file)
    with_extension = labels_file is not None and labels_file.ids_with_extension
    rows: list[list[str]] = []
    for p in predictions:
        name = os.path.basename(p.path)
        identifier = name if with_extension else os.path.splitext(name)[0]
        if p.problem or p.probabilities is None:
            rows.append([identifier] + [""] * len(columns))
        elif len(columns) > 1:
            rows.append([identifier] + [f"{p.probabilities[class_names.index(c)]:.6f}" for c in columns])
        elif p.tags is not None:
            separator = labels_file.separator if labels_file and labels_file.separator else " "
            rows.append([identifier, separator.join(p.tags)])
        else:
            rows.append([identifier, f"{p.probabilities[1]:.6f}" if len(class_names) == 2 else str(p.class_name)])
    rows.sort(key=lambda row: natural_key(row[0]))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([id_column, *columns])
        writer.writerows(rows)


def label_meaning(
    predictions: Sequence[Prediction], class_names: Sequence[str], labels_file: metadata.LabelsFile | None = None
) -> str:
    """What `write_submission` puts in its label column(s), in words ("label: the probability of dog, ...")."""
    columns = _submission_columns(labels_file)[1]
    if len(columns) > 1:
        return f"{', '.join(columns)}: the probability of each class"
    if any(p.tags is not None for p in predictions):
        return f"{columns[0]}: the classes above the threshold"
    if len(class_names) == 2:
        return f"{columns[0]}: the probability of {class_names[1]} (the second of {class_names[0]}, {class_names[1]})"
    return f"{columns[0]}: the most probable class"


def _submission_columns(labels_file: metadata.LabelsFile | None) -> tuple[str, list[str]]:
    """The submission's id column and label column(s): Kaggle's `id,label`, else those of the labels' CSV file."""
    if labels_file is None:
        return "id", ["label"]
    return labels_file.id_column, list(labels_file.label_columns)


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sorts names with their numbers as numbers: 1, 2, ..., 10 (not 1, 10, 2); cat.2 before cat.10."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text) if part)


def _probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    if not len(images):
        return images
    outputs = model.predict(images, verbose=0).astype(np.float64)
    if outputs.shape[-1] == 1:  # one sigmoid unit: the probability of the second class
        outputs = np.concatenate([1 - outputs, outputs], axis=-1)
    return outputs


def _batches(
    inputs: Sequence[str], preprocessing: Preprocessing, split: str
) -> Iterator[tuple[list[str], np.ndarray, list[str | None]]]:
    files = []
    for item in inputs:
        if metadata.is_dataset_dir(item):
            yield from _dataset_batches(item, split, preprocessing)
        elif os.path.isdir(item):
            files += sorted(
                (
                    os.path.join(folder, name)
                    for folder, _, names in os.walk(item)
                    for name in names
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
                ),
                key=natural_key,
            )
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image, folder or dataset")
    for start in range(0, len(files), BATCH_SIZE):
        chunk = files[start : start + BATCH_SIZE]
        contents = [_read(path) for path in chunk]
        batch = preprocessing.images([data if isinstance(data, bytes) else b"" for data in contents])
        yield (
            chunk,
            batch.images,
            [
                f"cannot read file: {data}" if isinstance(data, OSError) else problem
                for data, problem in zip(contents, batch.problems)
            ],
        )


def _read(path: str) -> bytes | OSError:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        return error


def _dataset_batches(
    data_dir: str, split: str, preprocessing: Preprocessing
) -> Iterator[tuple[list[str], np.ndarray, list[str | None]]]:
    """A converted split in stored order, with each record's source path, read as `load` reads it."""
    info = metadata.read(data_dir)
    parser = Preprocessing.of_dataset(info, preprocessing.image_size, preprocessing.crop_to_aspect_ratio).parser
    batches = (
        stored_records(info, split)
        .batch(BATCH_SIZE)
        .map(lambda records: parser.parse_batch(records, with_filenames=True), num_parallel_calls=tf.data.AUTOTUNE)
    )
    with damaged_shards_named(data_dir):
        for images, names in batches:
            yield [n.decode("utf-8", "surrogateescape") for n in names.numpy()], images.numpy(), [None] * len(names)
