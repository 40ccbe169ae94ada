"""Throughput figures for a training run: images/s per epoch, and how much of each step waited for input.

The waiting fraction compares each epoch's time per step with the model's pure compute time per step, measured
on a copy of the model fed one batch already in memory (so no input pipeline at all).
"""
from __future__ import annotations

import time

import keras
import tensorflow as tf

PROBE_STEPS = 10


class EpochThroughput(keras.callbacks.Callback):
    """Records the training time, steps and images of each epoch (validation excluded)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.epochs: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._steps, self._last = time.perf_counter(), 0, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = max(self._last - self._started, 1e-9)
        self.epochs.append({"seconds": seconds, "steps": self._steps,
                            "images_per_second": self._steps * self.batch_size / seconds})


def compute_seconds_per_step(model: keras.Model, batch: tuple[tf.Tensor, tf.Tensor]) -> float:
    """Seconds per training step of a copy of `model` on one in-memory batch (the model alone, no input)."""
    probe = keras.models.clone_model(model)
    probe.compile(optimizer=model.optimizer.__class__.from_config(model.optimizer.get_config()),
                  loss=model.loss, jit_compile=model.jit_compile)
    data = tf.data.Dataset.from_tensors(batch).repeat()
    probe.fit(data, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # trace and warm up
    started = time.perf_counter()
    probe.fit(data, steps_per_epoch=PROBE_STEPS, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - started) / PROBE_STEPS


def input_wait_fractions(epochs: list[dict[str, float]], compute_seconds: float) -> list[float]:
    """Per epoch: the share of step time not explained by compute, i.e. spent waiting for the input pipeline."""
    return [max(0.0, 1.0 - compute_seconds * e["steps"] / e["seconds"]) if e["steps"] else 0.0 for e in epochs]
