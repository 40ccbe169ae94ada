"""`shardflow evaluate` and `shardflow predict`: use a finished run on a dataset split, or on image files."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from shardflow import metadata, schema
from shardflow.images import IMAGE_EXTENSIONS
from shardflow.pipeline import damaged_shards_named, load  # importing the package registers Augment, Normalize
from shardflow.trainers import models
from shardflow.trainers.train import MODEL_FILE, RUN_FILE

BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Prediction:
    path: str
    probabilities: list[float]  # per class
    class_name: str

    @property
    def confidence(self) -> float:
        return max(self.probabilities)

    def sentence(self) -> str:
        return f"{self.path}: this image is {self.confidence:.0%} {self.class_name}"


def run_info(run: str) -> dict:
    """A finished run's run.json: class names, image size, channels, model name, options."""
    model_path, run_path = os.path.join(run, MODEL_FILE), os.path.join(run, RUN_FILE)
    if not os.path.exists(model_path) or not os.path.exists(run_path):
        raise FileNotFoundError(f"{run}: not a finished training run (no {MODEL_FILE} and {RUN_FILE}); "
                                "create one with `shardflow train`")
    with open(run_path) as f:
        return json.load(f)


def load_run(run: str) -> tuple[keras.Model, dict]:
    """The best model of a run folder, and its run.json."""
    info = run_info(run)
    return keras.models.load_model(os.path.join(run, MODEL_FILE)), info


def evaluate(run: str, data_dir: str, split: str = "test") -> dict[str, float]:
    """Loss and accuracy of a run's model on a split of a converted dataset."""
    model, info = load_run(run)
    meta = metadata.read(data_dir)
    if meta.class_names != info["class_names"]:
        raise ValueError(f"{data_dir} has classes {meta.class_names}, the model was trained on {info['class_names']}")
    model.compile(loss=models.loss_for(len(meta.class_names)), metrics=["accuracy"])
    with damaged_shards_named(data_dir):
        loss, accuracy = model.evaluate(load(data_dir, split, batch_size=BATCH_SIZE, image_size=info["image_size"]),
                                        verbose=0)
    return {"split": split, "loss": float(loss), "accuracy": float(accuracy),
            "num_examples": meta.split(split)["num_examples"]}


def predict(run: str, inputs: Sequence[str], split: str = "test") -> list[Prediction]:
    """Class probabilities for image files, folders of images, or a converted dataset's split (in stored order)."""
    model, info = load_run(run)
    names = info["class_names"]
    predictions = []
    for paths, images in _batches(inputs, info["image_size"], info["channels"], split):
        outputs = model.predict(images, verbose=0).astype(np.float64)
        if outputs.shape[-1] == 1:  # one sigmoid unit: the probability of the second class
            outputs = np.concatenate([1 - outputs, outputs], axis=-1)
        for path, probabilities in zip(paths, outputs):
            predictions.append(Prediction(path, probabilities.tolist(), names[int(np.argmax(probabilities))]))
    return predictions


def write_submission(predictions: Sequence[Prediction], path: str, class_names: Sequence[str]) -> None:
    """Kaggle's submission format, `id,label`: id from the file name (123.jpg -> 123); label = the probability
    of the second class for two classes (dogs-vs-cats: P(dog)), else the predicted class name."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        for p in predictions:
            identifier = os.path.splitext(os.path.basename(p.path))[0]
            writer.writerow([identifier, f"{p.probabilities[1]:.6f}" if len(class_names) == 2 else p.class_name])


def _batches(inputs: Sequence[str], size: int, channels: int, split: str) -> Iterator[tuple[list[str], tf.Tensor]]:
    files = []
    for item in inputs:
        if metadata.is_dataset_dir(item):
            yield from _dataset_batches(item, split, size)
        elif os.path.isdir(item):
            files += sorted(os.path.join(folder, name) for folder, _, names in os.walk(item) for name in names
                            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image, folder or dataset")
    for start in range(0, len(files), BATCH_SIZE):
        chunk = files[start:start + BATCH_SIZE]
        yield chunk, tf.stack([_read_image(path, size, channels) for path in chunk])


def _read_image(path: str, size: int, channels: int) -> tf.Tensor:
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(f"{path}: not an image TensorFlow can decode ({error.message.splitlines()[0]})") from None
    return tf.cast(tf.round(tf.image.resize(image, (size, size))), tf.uint8)


def _dataset_batches(data_dir: str, split: str, size: int) -> Iterator[tuple[list[str], tf.Tensor]]:
    """A converted split in stored order, with each record's source path."""
    meta = metadata.read(data_dir)
    filenames = tf.data.TFRecordDataset(meta.shard_paths(split)).map(
        lambda r: tf.io.parse_single_example(r, {schema.FILENAME: tf.io.FixedLenFeature([], tf.string)})[
            schema.FILENAME]).batch(BATCH_SIZE)
    images = load(data_dir, split, batch_size=BATCH_SIZE, image_size=size, shuffle=False)
    with damaged_shards_named(data_dir):
        for names, (batch, _) in zip(filenames, images):
            yield [n.decode("utf-8", "surrogateescape") for n in names.numpy()], batch
