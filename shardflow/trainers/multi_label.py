"""How well a multi-label model does, class by class: ROC AUC and F1 at a threshold for each class, and their
macro averages (the mean over classes), on a split's `(images, multi-hot labels)` batches. Exact (every image's
score ranked), unlike Keras' streaming AUC, which buckets scores into 200 thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from shardflow.trainers.options import THRESHOLD


def test_metrics(model: keras.Model, dataset: tf.data.Dataset | None, class_names: Sequence[str]) -> dict[str, Any]:
    """metrics.json's multi-label entries: `test_auc` and `test_f1` (macro) and `test_per_class`, on the test split
    (`dataset`; None: the dataset has none)."""
    if dataset is None:
        return {"test_auc": None, "test_f1": None, "test_per_class": None}
    found = scores(model, dataset, class_names)
    return {"test_auc": found["macro_auc"], "test_f1": found["macro_f1"], "test_per_class": found["classes"]}


def scores(
    model: keras.Model, dataset: tf.data.Dataset, class_names: Sequence[str], threshold: float = THRESHOLD
) -> dict[str, Any]:
    """`per_class` of the model's outputs on every batch of `dataset`."""
    truth, outputs = [], []
    for images, labels in dataset:
        outputs.append(np.asarray(model(images, training=False), np.float64))
        truth.append(labels.numpy())
    return per_class(np.concatenate(truth), np.concatenate(outputs), class_names, threshold)


def per_class(
    truth: np.ndarray, outputs: np.ndarray, class_names: Sequence[str], threshold: float = THRESHOLD
) -> dict[str, Any]:
    """{"macro_auc", "macro_f1", "classes": {name: {"auc", "f1", "precision", "recall", "support"}}} of multi-hot
    `truth` [N, classes] and sigmoid `outputs` [N, classes]. A class without positive (or without negative)
    images has no AUC (None) and is left out of the macro AUC; F1, precision and recall are 0 where undefined."""
    predicted = outputs > threshold
    positive = truth > 0.5
    classes = {}
    for i, name in enumerate(class_names):
        hits = int(np.sum(predicted[:, i] & positive[:, i]))
        claimed, support = int(predicted[:, i].sum()), int(positive[:, i].sum())
        classes[name] = {
            "auc": roc_auc(positive[:, i], outputs[:, i]),
            "f1": 2 * hits / (claimed + support) if claimed + support else 0.0,
            "precision": hits / claimed if claimed else 0.0,
            "recall": hits / support if support else 0.0,
            "support": support,
        }
    aucs = [c["auc"] for c in classes.values() if c["auc"] is not None]
    return {
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "macro_f1": float(np.mean([c["f1"] for c in classes.values()])),
        "threshold": threshold,
        "classes": classes,
    }


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """The area under the ROC curve: the chance that a random positive scores above a random negative (ties count
    half), from the scores' ranks; None without both positives and negatives."""
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    if not n_positive or not n_negative:
        return None
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, ties sharing their mean rank
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))
