"""One preprocessing path: a file given to prediction (or to `Preprocessing.images`, for serving) reaches the model
as exactly the pixels its record gives in training, whatever the conversion did to it."""

from __future__ import annotations

import csv
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from shardflow.cli import main
from shardflow.core import metadata
from shardflow.core.shards import stored_records
from shardflow.pipeline import Augment, Preprocessing, load
from shardflow.trainers.predict import evaluate, predict
from shardflow.trainers.train import TrainOptions, train
from tests.conftest import encode, noise_image

IMAGE_SIZE = 48
pytestmark = pytest.mark.slow  # each run fixture converts and trains


@pytest.fixture(scope="module")
def hard_run(kaggle_dir, tmp_path_factory):
    """Sample photos plus files the conversion changes (EXIF-rotated, CMYK, PNG, oversized), converted with
    --max-side, and a model trained on them."""
    root = tmp_path_factory.mktemp("parity")
    raw = root / "raw"
    shutil.copytree(kaggle_dir, raw)  # the 60 sample photos
    photo = Image.open(raw / "cat.0.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    special = {
        "cat.rotated.jpg": encode(photo, exif=exif.tobytes()),
        "dog.cmyk.jpg": encode(Image.open(raw / "dog.1.jpg").convert("CMYK")),
        "cat.drawing.png": encode(Image.open(raw / "cat.2.jpg"), "PNG"),
        "dog.oversized.jpg": encode(Image.open(raw / "dog.3.jpg").resize((400, 250))),
        "cat.gray.jpg": encode(noise_image(70, 50, seed=3, mode="L")),
    }
    for name, data in special.items():
        (raw / name).write_bytes(data)
    data = root / "data"
    assert (
        main(["convert", str(raw), str(data), "--max-side", "64", "--splits", "train=0.5,test=0.5", "--workers", "1"])
        == 0
    )
    run = root / "run"
    train(
        str(data),
        str(run),
        TrainOptions(
            model="small_convnet", epochs=1, steps_per_epoch=2, batch_size=8, image_size=IMAGE_SIZE, seed=0, verbose=0
        ),
    )
    return raw, data, run, sorted(special)


@pytest.fixture(scope="module")
def fixed_run(hard_run, tmp_path_factory):
    """The same files stored at exactly 40x56 (--size, centre-cropped), and a model that resizes and augments
    inside itself (the GPU placement, forced): it takes the stored 40x56 images."""
    raw, _, _, special = hard_run
    root = tmp_path_factory.mktemp("fixed")
    data = root / "data"
    assert (
        main(
            [
                "convert",
                str(raw),
                str(data),
                "--size",
                "40x56",
                "--crop-to-aspect-ratio",
                "--splits",
                "train=0.5,test=0.5",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    run = root / "run"
    train(
        str(data),
        str(run),
        TrainOptions(
            model="small_convnet",
            epochs=1,
            steps_per_epoch=2,
            batch_size=8,
            image_size=IMAGE_SIZE,
            augment="seed004",
            augment_on="model",
            seed=0,
            verbose=0,
        ),
    )
    return raw, data, run, special


@pytest.fixture(params=["hard_run", "fixed_run"])
def any_run(request):
    """A run of each placement: resize in the CPU pipeline (--max-side data), and in the model (--size data)."""
    return request.getfixturevalue(request.param)


def test_a_file_and_its_record_give_the_model_the_same_pixels(any_run):
    raw, data, run, special = any_run
    info = metadata.read(str(data))
    preprocessing = Preprocessing.read(str(run / "preprocessing.json"))
    assert preprocessing == Preprocessing.of_dataset(info, info.size or (IMAGE_SIZE, IMAGE_SIZE))
    parser = preprocessing.parser
    for split in info.splits:
        for records in stored_records(info, split).batch(64):
            images, names = parser.parse_batch(records, with_filenames=True)
            names = [n.decode() for n in names.numpy()]
            from_files = preprocessing.images([(raw / name).read_bytes() for name in names])
            assert from_files.problems == [None] * len(names)
            np.testing.assert_array_equal(from_files.images, images.numpy())
    if info.size is None:  # (a turned square image, a square model input)
        rotated = preprocessing.images([(raw / "cat.rotated.jpg").read_bytes()]).images[0].astype(float)
        plain = preprocessing.images([(raw / "cat.0.jpg").read_bytes()]).images[0].astype(float)
        # EXIF orientation 6 applied, as in conversion (which re-encodes the turned image: JPEG noise remains)
        assert np.abs(rotated - np.rot90(plain, k=-1)).mean() < 3 < np.abs(rotated - plain).mean()


def test_predicting_files_equals_predicting_their_records(any_run):
    raw, data, run, special = any_run
    from_records = {
        p.path: p.probabilities for split in ("train", "test") for p in predict(str(run), [str(data)], split)
    }
    from_files = {p.path.rsplit("/", 1)[1]: p.probabilities for p in predict(str(run), [str(raw)])}
    assert set(from_files) == set(from_records) and set(special) <= set(from_files)
    difference = max(abs(a - b) for name in from_files for a, b in zip(from_files[name], from_records[name]))
    assert difference <= 1e-4


def test_one_bad_file_does_not_stop_a_prediction_run(hard_run, tmp_path, capsys):
    raw, data, run, _ = hard_run
    folder = tmp_path / "test1"
    folder.mkdir()
    (folder / "1.jpg").write_bytes((raw / "cat.0.jpg").read_bytes())
    (folder / "2.jpg").write_bytes(b"")
    (folder / "3.jpg").write_bytes((raw / "dog.1.jpg").read_bytes()[:300])
    (folder / "4.jpg").write_bytes((raw / "cat.rotated.jpg").read_bytes())
    assert main(["predict", str(run), str(folder), "--csv", str(tmp_path / "submission.csv")]) == 0
    printed = capsys.readouterr()
    assert printed.out.count("this image is") == 2
    assert f"{folder / '2.jpg'}: not predicted: empty file" in printed.err
    assert f"{folder / '3.jpg'}: not predicted: " in printed.err
    assert "2 of 4 inputs could not be read" in printed.err
    rows = {row[0]: row[1] for row in list(csv.reader(open(tmp_path / "submission.csv")))[1:]}
    assert rows["2"] == rows["3"] == "" and 0 <= float(rows["1"]) <= 1 and 0 <= float(rows["4"]) <= 1


def test_evaluate_reads_like_training(any_run):
    """`shardflow evaluate` scores the model on what the parser gives for the stored records (what training and
    prediction see): its loss and accuracy are those of the model on those pixels."""
    _, data, run, _ = any_run
    preprocessing = Preprocessing.read(str(run / "preprocessing.json"))
    info = metadata.read(str(data))
    parsed = [preprocessing.parser.parse_batch(r) for r in stored_records(info, "test").batch(16)]
    images = np.concatenate([batch.numpy() for batch, _ in parsed])
    labels = np.concatenate([batch.numpy() for _, batch in parsed]).astype("float32")
    loaded = np.concatenate(
        [b.numpy() for b, _ in load(str(data), "test", batch_size=16, image_size=preprocessing.image_size)]
    )
    np.testing.assert_array_equal(loaded, images)
    model = keras.models.load_model(run / "model.keras")
    probabilities = np.asarray(model.predict(images, verbose=0))[:, 0].astype("float64")
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)  # Keras' binary crossentropy clips at its epsilon
    loss = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    scores = evaluate(str(run), str(data), "test")
    assert scores["num_examples"] == len(images) == info.splits["test"].num_examples
    assert scores["accuracy"] == pytest.approx(np.mean((probabilities > 0.5) == labels), abs=1e-6)
    assert scores["loss"] == pytest.approx(loss, rel=1e-5)


def test_the_model_placement_takes_stored_images_and_sees_the_pipelines_pixels(fixed_run):
    """The --size model resizes inside itself (Augment's inference path): stored 40x56 images through the whole
    model give what the CPU placement gives, the pipeline resizing to the model's size before the same layers."""
    _, data, run, _ = fixed_run
    model = keras.models.load_model(run / "model.keras")
    assert tuple(model.input.shape[1:]) == (40, 56, 3)
    augment, normalize, bare = model.layers[1:]
    assert isinstance(augment, Augment) and augment.output_size == (IMAGE_SIZE, IMAGE_SIZE)
    stored = next(iter(load(str(data), "test", batch_size=16, image_size=None)))[0]
    resized = next(iter(load(str(data), "test", batch_size=16, image_size=IMAGE_SIZE)))[0]
    np.testing.assert_allclose(model(stored, training=False), bare(normalize(resized)), atol=1e-6)
    assert json.loads((run / "metrics.json").read_text())["resize_on"] == "model"


def test_preprocessing_round_trips_through_json(hard_run):
    _, _, run, _ = hard_run
    text = (run / "preprocessing.json").read_text()
    value = json.loads(text)
    assert value["image"]["max_side"] == 64 and value["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert Preprocessing.from_json(Preprocessing.from_json(text).to_json()) == Preprocessing.from_json(text)


def test_record_is_what_the_conversion_stored_for_a_file(any_run):
    """`Preprocessing.record(file bytes, name)` is the `tf.train.Example` the conversion wrote for that file (the
    stored image byte for byte, the name; the label unknown: -1), for a serving graph of one's own."""
    raw, data, run, special = any_run
    preprocessing = Preprocessing.read(str(run / "preprocessing.json"))
    info = metadata.read(str(data))
    seen = set()
    for split in info.splits:
        for serialized in stored_records(info, split):
            stored = tf.train.Example.FromString(serialized.numpy()).features.feature
            name = stored["image/filename"].bytes_list.value[0].decode()
            made = tf.train.Example.FromString(preprocessing.record((raw / name).read_bytes(), name)).features.feature
            assert made["image"].bytes_list.value == stored["image"].bytes_list.value, name
            assert made["image/filename"].bytes_list.value == stored["image/filename"].bytes_list.value
            assert list(made["label"].int64_list.value) == [-1]
            seen.add(name)
    assert set(special) <= seen and len(seen) == info.num_records
