"""Resuming an interrupted run at the batch where it stopped (`shardflow train --resume`).

RUN/checkpoint.npz holds everything that fixes the rest of the run: the model's variables (its random seeds' state
included), the optimizer's, the metrics' running sums, the position (epoch, step), the state of the callbacks that
choose and stop (best so far, epochs waited), the history so far, the dataset and the options. `Checkpointing` writes
it every `checkpoint_every` steps and, on SIGTERM or SIGINT, at the end of the step under way; then training stops
with `Interrupted`.

The input position is a count of batches: with a `seed`, each epoch's order and augmentation depend on (seed, epoch)
alone (`shardflow.pipeline.reader.read_epochs`), so the resumed run rebuilds the interrupted epoch's stream and skips
the batches it already trained on, read but not decoded. Without a `seed` it continues at the same step, in a new
order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np

from shardflow.core.messages import ShardflowWarning

FILE = "checkpoint.npz"
SIGNALS = (signal.SIGTERM, signal.SIGINT)
UNCOMPARED = ("resume", "overwrite", "verbose", "checkpoint_every")  # options that leave the run's course as it is
CARRIED = {  # per callback class: the attributes that carry its decisions from epoch to epoch
    "ModelCheckpoint": ("best",),
    "EarlyStopping": ("wait", "stopped_epoch", "best", "best_epoch", "best_weights"),
    "EpochThroughput": ("epochs",),
}


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal after writing its checkpoint; the same call with `resume` continues it."""

    def __init__(self, signum: int, state: State, path: str, seconds: float):
        self.signum, self.state = signum, state
        super().__init__(
            f"{signal.Signals(signum).name}: stopped in epoch {state.epoch + 1}, {state.step} step(s) into it; "
            f"saved to {path} in {seconds:.2f} s; the same command with `resume` continues"
        )


@dataclasses.dataclass
class State:
    """Where a run is (epoch and step, counted from 0, and the steps of all epochs), what it was started with, and
    what its callbacks have decided so far; the arrays (variables, best weights) travel beside it."""

    data_dir: str
    options: dict[str, Any]
    epoch: int = 0
    step: int = 0
    steps_done: int = 0
    stopped: bool = False  # early stopping ended training
    finished: bool = False  # the run's results are written
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    carried: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @classmethod
    def start(cls, data_dir: str, options: Any) -> State:
        """A new run's state: the dataset's absolute path and the options (as JSON would return them)."""
        return cls(os.path.abspath(data_dir), json.loads(json.dumps(dataclasses.asdict(options), default=float)))

    def differences(self, other: State) -> list[str]:
        """What `other` (a new call) changes that fixes the course of the run: "`epochs` 3 (now 4)"."""
        said = [f"`data_dir` {self.data_dir} (now {other.data_dir})"] if self.data_dir != other.data_dir else []
        for name, value in self.options.items():
            if name not in UNCOMPARED and other.options.get(name) != value:
                said.append(f"`{name}` {_shown(value)} (now {_shown(other.options.get(name))})")
        return said


def load(out: str) -> tuple[State, dict[str, list[np.ndarray]]] | None:
    """The state and arrays of the checkpoint in run folder `out`, or None when it has none."""
    path = os.path.join(out, FILE)
    if not os.path.exists(path):
        return None
    with np.load(path) as saved:
        state = State(**json.loads(str(saved["state"])))
        arrays: dict[str, list[np.ndarray]] = {}
        for key in sorted((k for k in saved.files if k != "state"), key=lambda k: int(k.rsplit("/", 1)[1])):
            arrays.setdefault(key.rsplit("/", 1)[0], []).append(saved[key])
    return state, arrays


def resumed(out: str, new: State) -> tuple[State, dict[str, list[np.ndarray]]]:
    """The checkpoint in `out` to continue with the call `new`; a ValueError when there is none or `new` would
    change the run (naming what it changes)."""
    saved = load(out)
    if saved is None:
        raise ValueError(
            f"`resume`: {out} holds no checkpoint ({FILE}) to resume; a run writes one when SIGTERM or SIGINT "
            "stops it, and every `checkpoint_every` steps"
        )
    changed = saved[0].differences(new)
    if changed:
        raise ValueError(
            f"`resume`: the run in {out} was started with " + ", ".join(changed) + "; resume it with the same options"
        )
    return saved


def write(path: str, state: State, arrays: dict[str, list[np.ndarray]]) -> None:
    """The checkpoint at `path`, replaced in one step (a run stopped while writing keeps the one before)."""
    entries: dict[str, Any] = {f"{name}/{i}": a for name, values in arrays.items() for i, a in enumerate(values)}
    entries["state"] = np.array(json.dumps(dataclasses.asdict(state), default=float))
    partial = path + ".partial.npz"
    np.savez(partial, **entries)
    os.replace(partial, path)


class Checkpointing(keras.callbacks.Callback):
    """Writes the checkpoint every `every` steps and, after `catching_signals` caught SIGTERM/SIGINT, at the end of
    the step under way (then raises `Interrupted`); restores `arrays` when the next `fit` begins. Put it first among
    `fit`'s callbacks: it restores the others' state (`CARRIED`) after they reset it, and keeps the model's current
    weights from before `EarlyStopping` restores its best ones, for a `fit` that only finishes an epoch."""

    def __init__(
        self,
        path: str,
        state: State,
        every: int | None,
        callbacks: list[keras.callbacks.Callback],
        arrays: dict[str, list[np.ndarray]] | None = None,
    ):
        super().__init__()
        self.path, self.state, self.every, self.callbacks = path, state, every, callbacks
        self._arrays = arrays
        self._metrics = arrays["metrics"] if arrays is not None and state.step else None  # the epoch's sums so far
        self._signal: int | None = None
        self._save_after_epoch = False  # a periodic save that fell on an epoch's last step
        self.another_fit = False  # set before a `fit` that only finishes an epoch

    @contextmanager
    def catching_signals(self) -> Iterator[None]:
        """While training: SIGTERM and SIGINT stop it at the end of a step, with a checkpoint (in the main thread
        only, where Python handles signals); a signal after the last step stops the run once the checkpoint says
        training is done."""
        if threading.current_thread() is not threading.main_thread():
            warnings.warn(
                "training outside the main thread: SIGTERM and SIGINT stop it without a checkpoint",
                ShardflowWarning,
                stacklevel=3,
            )
            yield
            return
        previous = {number: signal.signal(number, self._caught) for number in SIGNALS}
        try:
            yield
            if self._signal is not None:  # after the last step: the weights as training left them
                self._stop(fresh=True)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _caught(self, signum: int, _frame: Any) -> None:
        self._signal = signum

    def on_train_begin(self, logs=None):
        if self._arrays is None:
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        for name in ("model", "optimizer"):
            _assign(self._variables(name), self._arrays[name], name)

    def restore_weights(self, model: keras.Model) -> None:
        """Without a `fit` to come (training had ended): the saved weights into `model`."""
        if self._arrays is not None:
            _assign(model.variables, self._arrays["model"], "model")

    def on_epoch_begin(self, epoch, logs=None):
        self._after_epoch()  # (before a resumed fit's first epoch takes the callbacks' state from the checkpoint)
        if self._arrays is None:
            return
        for callback in self.callbacks:
            kind = type(callback).__name__
            kept = self.state.carried.get(kind, {})
            for name in CARRIED.get(kind, ()):
                if f"{kind}.{name}" in self._arrays:
                    setattr(callback, name, self._arrays[f"{kind}.{name}"])
                elif name in kept:
                    setattr(callback, name, kept[name])
        self._arrays = None

    def on_train_batch_end(self, batch, logs=None):
        if self._metrics is not None:  # (built by the first step): Keras' metric states are sums, so add
            variables = self._variables("metrics")
            _assign(variables, [v.numpy() + saved for v, saved in zip(variables, self._metrics)], "metrics")
            self._metrics = None
        self.state.step += 1
        self.state.steps_done += 1
        due = bool(self.every) and self.state.steps_done % self.every == 0
        if batch + 1 == self.params.get("steps"):  # the epoch's end (validation, every callback's) comes first:
            self._save_after_epoch = due  # a checkpoint at its last step could not replay it
            return
        if self._signal is not None:
            self._stop()
        if due:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.state.history.setdefault(key, []).append(float(value))
        self.state.epoch, self.state.step = epoch + 1, 0

    def _after_epoch(self) -> None:
        """What an epoch's last step left for after the epoch's end: a signal's stop, a periodic save."""
        if self._signal is not None:
            self._stop()
        if self._save_after_epoch:
            self._save_after_epoch = False
            self.save()

    def on_train_end(self, logs=None):
        """Before `EarlyStopping` puts its best weights back: what `another_fit` continues from."""
        self.state.stopped = bool(self.model.stop_training)
        if self.another_fit:
            self._arrays = self._snapshot()
        else:
            self._after_epoch()

    def save(self, fresh: bool = False) -> float:
        """Write the checkpoint now (`fresh`: the model's weights as they are, after `EarlyStopping` put its best
        ones back); returns the seconds it took."""
        started = time.perf_counter()
        write(self.path, self.state, self._snapshot() if fresh or self._arrays is None else self._arrays)
        return time.perf_counter() - started

    def _stop(self, fresh: bool = False) -> None:
        signum, self._signal = self._signal, None
        assert signum is not None
        raise Interrupted(signum, self.state, self.path, self.save(fresh))

    def _snapshot(self) -> dict[str, list[np.ndarray]]:
        """The variables, and the callbacks' decisions (`state.carried`, their arrays beside them)."""
        arrays = {name: [v.numpy() for v in self._variables(name)] for name in ("model", "optimizer", "metrics")}
        for callback in self.callbacks:
            kept = {}
            for name in CARRIED.get(type(callback).__name__, ()):
                value = getattr(callback, name)
                if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
                    arrays[f"{type(callback).__name__}.{name}"] = value
                else:
                    kept[name] = value
            self.state.carried[type(callback).__name__] = kept
        return arrays

    def _variables(self, name: str) -> list:
        """The model's variables (`name` "model"), its optimizer's or its metrics'."""
        if name == "model":
            return self.model.variables
        return self.model.optimizer.variables if name == "optimizer" else self.model.metrics_variables


def _assign(variables: list, values: list[np.ndarray], what: str) -> None:
    """Each variable its saved value; a ValueError when the checkpoint was not written by this model."""
    if [tuple(v.shape) for v in variables] != [value.shape for value in values]:
        raise ValueError(f"the checkpoint's {what} variables do not match this model's; was it written by another run?")
    for variable, value in zip(variables, values):
        variable.assign(value)


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
