"""Throughput figures for a training run: images/s per epoch, and how much of each step waited for input.

Steady state: each epoch's first step (tracing, the input pipeline's start) is left out of its figures. The waiting
fraction compares that time per step with the model's pure compute time per step, measured by the trained model's
own (already traced) train step fed one batch held in memory, so no input pipeline at all.
"""

from __future__ import annotations

import statistics
import time

import keras
import tensorflow as tf

PROBE_STEPS = 10  # at most, the first not timed; the probe ends sooner once PROBE_SECONDS have passed (on a CPU)
PROBE_SECONDS = 1.0
MIN_PROBE_STEPS = 3


class EpochThroughput(keras.callbacks.Callback):
    """Records the training time, steps and images of each epoch after its first step (validation excluded)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.epochs: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._ends = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        self._ends.append(time.perf_counter())

    def step_seconds(self) -> list[float]:
        """The seconds of each step of this epoch timed so far (after its first)."""
        ends = self._ends[1:] if len(self._ends) > 2 else self._ends  # a one-step epoch keeps its only step
        return [end - start for start, end in zip(ends, ends[1:])]

    def timed_so_far(self) -> tuple[int, float]:
        """The steps of this epoch timed so far (after its first) and their seconds."""
        steps = self.step_seconds()
        return len(steps), sum(steps)

    def on_epoch_end(self, epoch, logs=None):
        steps, seconds = self.timed_so_far()
        seconds = max(seconds, 1e-9)
        self.epochs.append({"seconds": seconds, "steps": steps, "images_per_second": steps * self.batch_size / seconds})


def compute_seconds_per_step(trained: keras.Model, batches: tf.data.Dataset) -> float:
    """Seconds per training step of `trained` on the first of `batches` held in memory (the model alone, no input).

    It trains `trained` further: call it once the run is saved. The batches keep the training stream's element spec,
    so the step traced in training is reused, not traced again. Timed like the epochs (`EpochThroughput`: between
    steps, the first left out), so `fit`'s own start and end do not count as compute; the median step, so a stall of
    the host (another process, a collection) in one of a few steps does not count as compute either.
    """
    data = batches.take(1).cache().repeat()
    trained.fit(data, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # fills the cache, warms up
    probe = EpochThroughput(batch_size=1)
    callbacks = [probe, _ProbeLimit(probe)]
    trained.fit(data, steps_per_epoch=PROBE_STEPS, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
    return statistics.median(probe.step_seconds())


class _ProbeLimit(keras.callbacks.Callback):
    """Ends the probe's epoch once MIN_PROBE_STEPS steps are timed and PROBE_SECONDS have passed since its first
    step: on a CPU a step of a tutorial model takes 0.1-0.5 s, and ten of them would add seconds to every run."""

    def __init__(self, probe: EpochThroughput):
        super().__init__()
        self.probe = probe

    def on_train_batch_end(self, batch, logs=None):
        steps, seconds = self.probe.timed_so_far()
        if steps >= MIN_PROBE_STEPS and seconds >= PROBE_SECONDS:
            self.model.stop_training = True


def input_wait_fractions(epochs: list[dict[str, float]], compute_seconds: float) -> list[float]:
    """Per epoch: the share of step time not explained by compute, i.e. spent waiting for the input pipeline."""
    return [max(0.0, 1.0 - compute_seconds * e["steps"] / e["seconds"]) if e["steps"] else 0.0 for e in epochs]
