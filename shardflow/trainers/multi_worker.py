"""Training under MultiWorkerMirroredStrategy with a custom loop.

Keras 3's `model.fit` and `model.evaluate` fail under MultiWorkerMirroredStrategy (keras-team/keras#20585,
tensorflow/tensorflow#72388), so this loop does their job: replicated steps with `strategy.run`, losses and
accuracy summed across workers, best-by-validation-loss checkpoints and early stopping on the chief.
"""

from __future__ import annotations

import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    return (
        resolver is None
        or resolver.task_type in (None, "chief")
        or (resolver.task_type == "worker" and resolver.task_id == 0)
    )


class MultiWorkerLoop:
    """fit/evaluate for a compiled model built in `strategy.scope()`; metrics are global (all workers)."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, loss: str, multi_label: bool = False):
        self.model, self.strategy, self.multi_label = model, strategy, multi_label
        self.loss = keras.losses.get({"class_name": loss, "config": {"reduction": None}})
        self.binary = loss == "binary_crossentropy" and not multi_label
        self._train_step = tf.function(self._replicated(self._train))
        self._test_step = tf.function(self._replicated(self._test))

    def fit(
        self,
        train: tf.data.Dataset,
        validation: tf.data.Dataset | None,
        *,
        epochs: int,
        steps_per_epoch: int | None,
        patience: int | None,
        checkpoint: str | None,
        verbose: int = 2,
    ) -> tuple[dict[str, list[float]], list[dict[str, float]]]:
        """Train; returns (history like Keras', per-epoch timing). The best weights by val_loss are restored."""
        history: dict[str, list[float]] = {}
        timings, best, best_weights, waited = [], np.inf, None, 0
        distributed = self.strategy.experimental_distribute_dataset(train)
        for epoch in range(epochs):
            started = time.perf_counter()
            totals, steps = np.zeros(3), 0
            for batch in distributed:
                totals += [float(v) for v in self._train_step(batch)]
                steps += 1
                if steps_per_epoch and steps >= steps_per_epoch:
                    break
            seconds = time.perf_counter() - started
            timings.append({"seconds": seconds, "steps": steps, "images_per_second": totals[2] / seconds})
            logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}
            if validation is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(validation).items()})
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()), flush=True)
            monitored = logs.get("val_loss", logs["loss"])
            if monitored < best:
                best, best_weights, waited = monitored, self.model.get_weights(), 0
                if checkpoint:
                    self._save(checkpoint)
            else:
                waited += 1
                if patience is not None and waited > patience:
                    break
        if best_weights is not None:
            self.model.set_weights(best_weights)
        return history, timings

    def _save(self, path: str) -> None:
        """Every worker saves (the variables' reads are collective); only the chief's copy is kept."""
        if is_chief(self.strategy):
            self.model.save(path)
            return
        with tempfile.TemporaryDirectory() as scratch:
            self.model.save(os.path.join(scratch, os.path.basename(path)))

    def evaluate(self, dataset: tf.data.Dataset) -> dict[str, float]:
        totals = np.zeros(3)
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            totals += [float(v) for v in self._test_step(batch)]
        return {"loss": totals[0] / max(totals[2], 1), "accuracy": totals[1] / max(totals[2], 1)}

    def _replicated(self, step):
        def run(batch):
            per_replica = self.strategy.run(step, args=batch)
            return [self.strategy.reduce("SUM", value, axis=None) for value in per_replica]

        return run

    def _sums(self, labels, predictions):
        """(summed loss, correct predictions, examples) of one replica's batch; multi-label: each image's share of
        its classes predicted right at 0.5 (Keras' binary accuracy)."""
        predictions = tf.cast(predictions, tf.float32)
        if self.multi_label:
            losses = self.loss(labels, predictions)
            correct = tf.reduce_mean(tf.cast(tf.equal(tf.cast(predictions > 0.5, tf.float32), labels), tf.float32), -1)
            return tf.reduce_sum(losses), tf.reduce_sum(correct), tf.cast(tf.shape(labels)[0], tf.float32)
        losses = self.loss(tf.reshape(tf.cast(labels, tf.float32), [-1, 1]) if self.binary else labels, predictions)
        if self.binary:
            correct = tf.equal(tf.cast(predictions[:, 0] > 0.5, tf.int64), tf.cast(labels, tf.int64))
        else:
            correct = tf.equal(tf.argmax(predictions, axis=-1), tf.cast(labels, tf.int64))
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.reduce_sum(losses), tf.reduce_sum(tf.cast(correct, tf.float32)), count

    def _train(self, images, labels):
        with tf.GradientTape() as tape:
            predictions = self.model(images, training=True)
            loss_sum, correct, count = self._sums(labels, predictions)
            # Mean over the global batch: the gradients summed across replicas are then the global mean's.
            global_count = count * self.strategy.num_replicas_in_sync
            loss = loss_sum / global_count
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.model.optimizer.apply_gradients(zip(gradients, variables))
        return loss_sum, correct, count

    def _test(self, images, labels):
        return self._sums(labels, self.model(images, training=False))
