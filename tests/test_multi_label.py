"""Multi-label end to end, from the CLI and from Python: a Planet-shaped CSV converted, loaded, trained on (sigmoid
outputs, binary cross-entropy, per-class and macro AUC and F1), evaluated and predicted into the CSV Kaggle expects;
and the submissions of the single-label CSV shapes."""

from __future__ import annotations

import csv
import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.cli import main
from shardflow.core import metadata
from shardflow.core.decoder import Decoder
from shardflow.pipeline import load
from shardflow.trainers import models, multi_label
from shardflow.trainers.multi_worker import MultiWorkerLoop
from shardflow.trainers.predict import evaluate, predict, run_labels_file, write_submission
from shardflow.trainers.train import TrainOptions, train
from tests import csv_corpora

QUICK = (
    "--model",
    "mnist_convnet",
    "--image-size",
    "28",
    "--epochs",
    "2",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "8",
    "--seed",
    "0",
)


def read_csv(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def planet(tmp_path_factory):
    """The Planet-shaped corpus and its conversion (from Python)."""
    root = tmp_path_factory.mktemp("planet")
    corpus = csv_corpora.planet(root / "kaggle")
    convert(str(corpus.src), str(root / "data"), ConvertOptions(labels=str(corpus.labels_csv), workers=1))
    return corpus, root / "data"


@pytest.fixture(scope="module")
def planet_run(planet, tmp_path_factory):
    """A few steps of training on it, from the CLI."""
    run = tmp_path_factory.mktemp("runs") / "planet"
    assert main(["train", str(planet[1]), "--out", str(run), *QUICK]) == 0
    return run


def test_roc_auc_is_the_share_of_ranked_pairs():
    rng = np.random.default_rng(0)
    positive = rng.random(60) < 0.3
    score = np.round(rng.random(60), 1)  # many ties
    pairs = [(p, n) for p, n in itertools.product(score[positive], score[~positive])]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert multi_label.roc_auc(positive, score) == pytest.approx(expected)
    assert multi_label.roc_auc(np.ones(4, bool), score[:4]) is None


def test_per_class_scores():
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], np.float32)
    outputs = np.array([[0.9, 0.2], [0.6, 0.4], [0.3, 0.8], [0.7, 0.1]])
    scores = multi_label.per_class(truth, outputs, ["a", "b"])
    a, b = scores["classes"]["a"], scores["classes"]["b"]
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == (2 / 3, 1.0, 0.8, 2)
    assert (b["precision"], b["recall"], b["f1"]) == (1.0, 0.5, pytest.approx(2 / 3))
    assert a["auc"] == 0.75 and b["auc"] == 1.0
    assert scores["macro_auc"] == 0.875 and scores["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_the_model_has_a_sigmoid_per_class_and_binary_cross_entropy(planet, planet_run):
    info = metadata.read(str(planet[1]))
    model = keras.models.load_model(planet_run / "model.keras")
    assert model.output_shape == (None, len(info.class_names))
    assert model.layers[-1].layers[-1].get_config()["activation"] == "sigmoid"
    assert models.loss_for(5, multi_label=True) == "binary_crossentropy"
    history = json.loads((planet_run / "history.json").read_text())
    assert {"accuracy", "auc", "f1", "val_auc", "val_f1", "loss"} <= set(history)
    metrics = json.loads((planet_run / "metrics.json").read_text())
    assert metrics["evaluated_on"] == "test" and 0 <= metrics["test_f1"] <= 1
    assert set(metrics["test_per_class"]) == set(info.class_names)
    assert {"auc", "f1", "precision", "recall", "support"} == set(metrics["test_per_class"]["clear"])
    support = {name: scores["support"] for name, scores in metrics["test_per_class"].items()}
    assert support == info.split("test").label_counts
    run = json.loads((planet_run / "run.json").read_text())
    assert run["multi_label"] and run["labels_file"]["label_columns"] == ["tags"]


def test_predict_writes_the_tags_above_the_threshold(planet, planet_run, tmp_path, capsys):
    corpus, data = planet
    assert (
        main(
            [
                "predict",
                str(planet_run),
                str(corpus.src / "train_3.jpg"),
                str(corpus.src / "train_4.jpg"),
                "--csv",
                str(tmp_path / "submission.csv"),
                "--threshold",
                "0.3",
            ]
        )
        == 0
    )
    assert "most probable" in capsys.readouterr().out
    rows = read_csv(tmp_path / "submission.csv")
    assert rows[0] == ["image_name", "tags"] and [r[0] for r in rows[1:]] == ["train_3", "train_4"]
    predictions = predict(str(planet_run), [str(corpus.src / "train_3.jpg")], threshold=0.3)
    names = metadata.read(str(data)).class_names
    expected = [name for p, name in sorted(zip(predictions[0].probabilities, names), reverse=True) if p > 0.3]
    assert list(predictions[0].tags) == expected and rows[1][1] == " ".join(expected)
    everything = predict(str(planet_run), [str(corpus.src / "train_3.jpg")], threshold=0.0)[0]
    assert len(everything.tags) == len(names)
    assert main(["predict", str(planet_run), str(data), "--threshold", "1.5"]) == 2


def test_evaluate_and_the_api_round_trip(planet, planet_run, tmp_path, capsys):
    corpus, data = planet
    result = evaluate(str(planet_run), str(data), "test")
    assert {"loss", "accuracy", "auc", "f1"} <= set(result) and result["num_examples"] > 0
    assert main(["evaluate", str(planet_run), str(data)]) == 0
    assert "macro AUC" in capsys.readouterr().out
    metrics = train(
        str(data),
        str(tmp_path / "api"),
        TrainOptions(
            model="mnist_convnet", image_size=28, epochs=1, steps_per_epoch=2, batch_size=8, seed=0, verbose=0
        ),
    )
    assert metrics["test_auc"] is None or 0 <= metrics["test_auc"] <= 1
    predictions = predict(str(tmp_path / "api"), [str(data)], "validation")
    write_submission(
        predictions,
        str(tmp_path / "val.csv"),
        metadata.read(str(data)).class_names,
        run_labels_file(str(tmp_path / "api")),
    )
    rows = read_csv(tmp_path / "val.csv")
    assert len(rows) == 1 + metadata.read(str(data)).split("validation").num_examples
    assert all(set(r[1].split()) <= set(csv_corpora.TAGS) for r in rows[1:])


def test_every_architecture_takes_multi_label():
    for name in ("small_convnet", "mnist_convnet"):
        model = models.build(name, (32, 32, 3), 5, multi_label=True)
        assert model.output_shape == (None, 5) and model.layers[-1].get_config()["activation"] == "sigmoid"
    transfer = models.build("transfer", (32, 32, 3), 5, base="mobilenet_v2", weights="none", multi_label=True)
    assert transfer.layers[-1].get_config()["activation"] == "sigmoid"
    assert models.features_head((2, 2, 8), 5, multi_label=True).output_shape == (None, 5)
    assert models.build("mnist_convnet", (28, 28, 1), 2).output_shape == (None, 1)  # single-label: as before


def test_the_multi_worker_loop_trains_multi_label(planet):
    info = metadata.read(str(planet[1]))
    n = len(info.class_names)
    model = models.build("mnist_convnet", (28, 28, 3), n, multi_label=True)
    model.compile(optimizer="adam")
    loop = MultiWorkerLoop(model, tf.distribute.get_strategy(), models.loss_for(n, True), multi_label=True)
    stream = load(str(planet[1]), "train", batch_size=8, image_size=28)
    history, _ = loop.fit(
        stream.map(lambda x, y: (tf.cast(x, tf.float32) / 255, y)),
        None,
        epochs=1,
        steps_per_epoch=2,
        patience=None,
        checkpoint=None,
        verbose=0,
    )
    assert 0 <= history["accuracy"][0] <= 1 and history["loss"][0] > 0


@pytest.mark.parametrize(
    "shape, header",
    [
        ("cactus", ["id", "has_cactus"]),
        ("plant_pathology", ["image_id", *csv_corpora.DISEASES]),
    ],
)
def test_single_label_submissions_keep_the_files_shape(shape, header, tmp_path):
    corpus = getattr(csv_corpora, shape)(tmp_path / "kaggle")
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["convert", str(corpus.src), str(data), "--labels", str(corpus.labels_csv), "--workers", "1"]) == 0
    assert main(["train", str(data), "--out", str(run), *QUICK]) == 0
    assert main(["predict", str(run), str(data), "--split", "train", "--csv", str(tmp_path / "sub.csv")]) == 0
    rows = read_csv(tmp_path / "sub.csv")
    assert rows[0] == header
    train = {name for name, split in _splits(data).items() if split == "train"}
    if shape == "cactus":  # ids with their extension, as train.csv gives them; P(has_cactus == 1)
        assert {r[0] for r in rows[1:]} == train and all(0 <= float(r[1]) <= 1 for r in rows[1:])
    else:  # a probability per class column, in the file's order
        assert {r[0] + ".jpg" for r in rows[1:]} == train
        assert all(sum(map(float, r[1:])) == pytest.approx(1, abs=1e-4) for r in rows[1:])


def _splits(data) -> dict[str, str]:
    """Each record's source path -> its split."""
    info = metadata.read(str(data))
    decoder = Decoder(info.schema)
    return {
        decoder.parse(record).filename.numpy().decode(): split
        for split in info.splits
        for record in tf.data.TFRecordDataset(info.shard_paths(split))
    }
