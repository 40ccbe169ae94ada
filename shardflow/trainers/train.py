"""`shardflow train`: a tutorial model on `load` streams, with checkpoints, early stopping, plots and throughput.

With a GPU (`augment_on="auto"`), the input pipeline only decodes (at the dataset's stored size, when it has
one: `shardflow convert --size`) and the model's first layers do the rest on the GPU: `Augment` (resize to the
model's size and augmentation in one resampling) or `Resize`, then `Normalize`; the saved model takes stored-size
uint8 images. Without a GPU, the resize and augmentation stay fused in the CPU input pipeline.
Everything a run produces goes to its folder: model.keras, run.json, preprocessing.json (what prediction and
serving repeat), history.json, history.png, metrics.json, logs/.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from shardflow.core import files, metadata
from shardflow.core.messages import ShardflowWarning
from shardflow.pipeline import Preprocessing, ReadConfig, damaged_shards_named, read
from shardflow.pipeline import preprocessing as preprocessing_lib
from shardflow.pipeline.augment import Augment, parse_augment
from shardflow.pipeline.epochs import endless_epochs, epoch_seed
from shardflow.pipeline.normalize import Normalize
from shardflow.pipeline.reader import batch_count, read_epochs
from shardflow.pipeline.resize import Resize
from shardflow.trainers import models, multi_label, resume
from shardflow.trainers.multi_worker import MultiWorkerLoop
from shardflow.trainers.options import FEATURES, ON_A_BASE, TRAINING_DEFAULTS, TrainOptions
from shardflow.trainers.plots import plot_history
from shardflow.trainers.throughput import EpochThroughput, compute_seconds_per_step, input_wait_fractions
from shardflow.trainers.validation import Part, validation_part

MODEL_FILE, RUN_FILE, HISTORY_FILE, PLOT_FILE, METRICS_FILE, LOGS = (
    "model.keras",
    "run.json",
    "history.json",
    "history.png",
    "metrics.json",
    "logs",
)
logger = logging.getLogger(__name__)


def train(data_dir: str, out: str, options: TrainOptions = TrainOptions()) -> dict[str, Any]:
    """Train `options.model` on the dataset in `data_dir`, write the run to `out`; returns metrics.json's content.

    `options`: a [`TrainOptions`][shardflow.trainers.options.TrainOptions]. Says where it trains on the `shardflow`
    logger (INFO) and what probably is not meant as [`ShardflowWarning`][shardflow.core.messages.ShardflowWarning]s.
    SIGTERM or SIGINT while it trains writes a checkpoint (also every `options.checkpoint_every` steps) and raises
    [`Interrupted`][shardflow.trainers.resume.Interrupted]; the same call with `resume=True` continues at the next
    batch (exactly, with a `seed`)."""
    started = time.time()
    with damaged_shards_named(data_dir):
        plan = _plan(data_dir, out, options)
        if plan.state.finished:
            warnings.warn(
                f"`resume`: the run in {out} is finished ({plan.state.epoch} epochs); nothing to resume",
                ShardflowWarning,
                stacklevel=2,
            )
            with open(os.path.join(out, METRICS_FILE)) as f:
                return json.load(f)
        with plan.strategy.scope():
            if plan.options.model == FEATURES:
                trained = _train_on_features(plan)
            elif plan.multi_worker:
                trained = _train_multi_worker(plan)
            else:
                trained = _train_with_fit(plan)
        metrics = _write_results(plan, trained, started)
        resume.write(os.path.join(out, resume.FILE), dataclasses.replace(plan.state, finished=True), {})
        return metrics


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a run does, decided and checked before anything is written."""

    data_dir: str
    out: str
    info: metadata.DatasetInfo
    options: TrainOptions  # with the model's defaults filled in
    size_source: str  # where the image size came from, for the start line
    params: dict[str, Any] | None  # the augmentation, parsed
    augment_on: str  # "model" or "pipeline": where resize + augmentation run
    gpus: int
    training: Part
    validation: Part | None
    evaluation: Part | None  # the test split, only reported
    strategy: tf.distribute.Strategy
    state: resume.State  # where training starts: a new run's, or the checkpoint's
    arrays: dict[str, list[np.ndarray]] | None  # the checkpoint's variables (resuming), to restore

    @property
    def size(self) -> int:
        return _filled(self.options.image_size)

    @property
    def batch_size(self) -> int:
        return _filled(self.options.batch_size)

    @property
    def input_size(self) -> tuple[int, int]:
        """What the pipeline hands the model: in the model, it only decodes (to the stored size, when there is one)."""
        stored = self.info.stored_size if self.augment_on == "model" else None
        return stored or (self.size, self.size)

    @property
    def num_classes(self) -> int:
        return len(self.info.class_names)

    @property
    def multi_label(self) -> bool:
        return self.info.multi_label

    @property
    def multi_worker(self) -> bool:
        return isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def stream(self, part: Part, train: bool) -> tf.data.Dataset:
        """One part's batches: shuffled and augmented (when the pipeline augments) for training."""
        return self._distributed(read(self.data_dir, part.split, self.read_config(part, train)), part)

    def training_epochs(self, first: int, skip: int) -> tf.data.Dataset:
        """The training part epoch after epoch from epoch `first`, its first `skip` batches left out (`read_epochs`)."""
        config = dataclasses.replace(self.read_config(self.training, True), skip=skip)
        return self._distributed(read_epochs(self.data_dir, self.training.split, config, first), self.training)

    def read_config(self, part: Part, train: bool) -> ReadConfig:
        return ReadConfig(
            batch_size=self.batch_size,
            image_size=self.input_size,
            shuffle=train,
            seed=self.options.seed,
            augment=self.params if train and self.augment_on == "pipeline" else None,
            cache=self.options.cache,
            holdout=part.holdout,
        )

    def _distributed(self, dataset: tf.data.Dataset, part: Part) -> tf.data.Dataset:
        return _shard_policy(dataset, len(self.info.split(part.split).shards), self.strategy.num_replicas_in_sync)

    def normalize(self) -> Normalize:
        """A new layer scaling the model's input as its model (or base) expects."""
        return Normalize(models.normalization_for(self.options.model, self.options.base))


@dataclasses.dataclass(frozen=True)
class _Trained:
    """What every training path hands back: the model with its best weights (saved in the run), Keras-style
    history, per-epoch timings, and how to score the model on a stream: (loss, accuracy)."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs: list[dict[str, float]]
    evaluate: Callable[[tf.data.Dataset], tuple[float, float]]


def _plan(data_dir: str, out: str, options: TrainOptions) -> _Plan:
    """Read and check the dataset, fill in the model's defaults, choose where each step runs; say so."""
    info = metadata.read(data_dir)
    _check(info, options)
    if not options.resume:
        _check_run_folder(out, options.overwrite)
    size_source = options.image_size_source(info.stored_size)
    options = options.with_model_defaults(info.stored_size)
    if options.seed is not None:
        keras.utils.set_random_seed(options.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if options.mixed_precision else "float32")
    params = parse_augment(options.augment)
    gpus = len(tf.config.list_physical_devices("GPU"))
    validation = validation_part(info, options.validation_split)
    rest_of_train = validation.holdout.rest() if validation and validation.holdout else None
    state, arrays = resume.State.start(data_dir, options), None
    if options.resume:
        state, arrays = resume.resumed(out, state)
    plan = _Plan(
        data_dir,
        out,
        info,
        options,
        size_source,
        params,
        _augment_placement(options, gpus > 0),
        gpus,
        training=Part(metadata.TRAIN, rest_of_train),
        validation=validation,
        evaluation=Part(metadata.TEST) if metadata.TEST in info.splits else None,
        strategy=distribution_strategy(),
        state=state,
        arrays=arrays,
    )
    if plan.multi_worker and (options.resume or options.checkpoint_every):
        raise ValueError(
            "`resume` and `checkpoint_every` are not supported by the multi-worker loop (TF_CONFIG is set): it cannot "
            "resume a run, only start it again"
        )
    if options.verbose:
        logger.info(_start_line(plan))
    for warning in _warnings(info, options, validation) + _resume_warnings(plan):
        warnings.warn(warning, ShardflowWarning, stacklevel=3)
    return plan


def _train_with_fit(plan: _Plan) -> _Trained:
    """Keras' `fit`, with best-epoch checkpoints, early stopping and TensorBoard logs, resumable."""
    model, validation_stream = _begin(plan)
    throughput = EpochThroughput(plan.batch_size)
    per_epoch = batch_count(plan.data_dir, plan.training.split, plan.read_config(plan.training, True))
    history = _fit(
        plan,
        model,
        lambda done: plan.training_epochs(*divmod(done, per_epoch)),
        plan.options.steps_per_epoch or per_epoch,
        validation_stream,
        _callbacks(plan.out, plan.options, plan.validation) + [throughput],
    )
    return _saved(plan, model, history, throughput.epochs)


def _fit(
    plan: _Plan,
    model: keras.Model,
    stream_after: Callable[[int], tf.data.Dataset],
    steps: int,
    validation: tf.data.Dataset | None,
    callbacks: list[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    """`model.fit` for `steps` per epoch on `stream_after(steps done)`, from the plan's state: a run resumed within
    an epoch first finishes it in a `fit` of its own. Returns the whole run's history."""
    state, options = plan.state, plan.options
    checkpointing = resume.Checkpointing(
        os.path.join(plan.out, resume.FILE), state, options.checkpoint_every, callbacks, plan.arrays
    )
    if plan.arrays is not None and options.verbose:
        logger.info(
            f"resuming {plan.out}: its {options.epochs} epochs were trained; writing the results"
            if state.epoch >= options.epochs
            else f"resuming {plan.out} in epoch {state.epoch + 1} of {options.epochs}, after step {state.step} of "
            f"{steps}" + ("" if options.seed is not None else " (a new order: no `seed`)")
        )
    fits = [(state.epoch + 1, steps - state.step)] if state.step else []
    fits.append((options.epochs, steps))
    trains = not state.stopped and state.epoch < options.epochs
    with checkpointing.catching_signals(), warnings.catch_warnings():  # a held-out validation part's length is
        warnings.filterwarnings("ignore", "Your input ran out of data")  # unknown: Keras calls its end running out
        if not trains:
            checkpointing.restore_weights(model)
        for number, (epochs, steps_now) in enumerate(fits):
            if state.stopped or state.epoch >= epochs:
                break
            checkpointing.another_fit = number < len(fits) - 1
            model.fit(
                stream_after(state.steps_done),
                validation_data=validation,
                initial_epoch=state.epoch,
                epochs=epochs,
                steps_per_epoch=steps_now,
                callbacks=[checkpointing, *callbacks],
                verbose=options.verbose,
                shuffle=False,  # the stream is shuffled (Keras would only warn that it cannot)
            )
        if trains and options.checkpoint_every:  # training done: a run stopped while writing results resumes there
            checkpointing.save(fresh=True)
    return state.history


def _train_multi_worker(plan: _Plan) -> _Trained:
    """The custom loop of `multi_worker` (Keras' `fit` and `evaluate` fail under MultiWorkerMirroredStrategy); it
    saves on every improvement and ends with the best weights."""
    model, validation_stream = _begin(plan)
    train_stream = plan.stream(plan.training, True)
    loop = MultiWorkerLoop(model, plan.strategy, models.loss_for(plan.num_classes, plan.multi_label), plan.multi_label)
    history, epochs = loop.fit(
        train_stream,
        validation_stream,
        epochs=plan.options.epochs,
        steps_per_epoch=plan.options.steps_per_epoch,
        patience=plan.options.patience,
        checkpoint=os.path.join(plan.out, MODEL_FILE),
        verbose=plan.options.verbose,
    )

    def evaluate(stream: tf.data.Dataset) -> tuple[float, float]:
        scores = loop.evaluate(stream)
        return scores["loss"], scores["accuracy"]

    return _Trained(model, history, epochs, evaluate)


def _train_on_features(plan: _Plan) -> _Trained:
    """Feature extraction: run the frozen base once per part (of the training part, `steps_per_epoch` batches if
    set), then train a small head on the features."""
    options, size = plan.options, plan.size
    extractor_input = keras.Input((size, size, 3), dtype="uint8", name="image")
    base = models.feature_extractor(options.base, (size, size, 3), options.weights)
    extractor = keras.Model(extractor_input, base(plan.normalize()(extractor_input)))

    def features(part: Part, batches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        outputs, labels = [], []
        for images, batch_labels in plan.stream(part, False).take(batches or -1):
            outputs.append(extractor(images, training=False).numpy())
            labels.append(batch_labels.numpy())
        return np.concatenate(outputs), np.concatenate(labels)

    head = models.features_head(tuple(base.output.shape[1:]), plan.num_classes, plan.multi_label)
    _compile(head, options, plan.num_classes, plan.multi_label)
    _prepare_run_folder(plan.out, options)  # only now: a mistake found above leaves no run folder
    train_features = tf.data.Dataset.from_tensor_slices(features(plan.training, options.steps_per_epoch))
    per_epoch = int(train_features.batch(plan.batch_size).cardinality())

    def head_epochs(done: int) -> tf.data.Dataset:
        """Epoch after epoch of the features, each shuffled by (seed, epoch), from `done` batches on."""
        first, skip = divmod(done, per_epoch)

        def epoch(number: tf.Tensor) -> tf.data.Dataset:
            batches = train_features.shuffle(4096, seed=epoch_seed(options.seed, number)).batch(plan.batch_size)
            return batches.skip(tf.where(number == first, tf.constant(skip, tf.int64), 0))

        return endless_epochs(epoch, first)

    throughput = EpochThroughput(plan.batch_size)
    validation = (
        tf.data.Dataset.from_tensor_slices(features(plan.validation)).batch(plan.batch_size)
        if plan.validation
        else None
    )
    patience = options.patience
    stopping = [keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)] if patience else []
    history = _fit(plan, head, head_epochs, per_epoch, validation, [throughput, *stopping])
    model = keras.Model(extractor_input, head(extractor(extractor_input)), name="shardflow_features")
    return _saved(plan, model, history, throughput.epochs)


def _begin(plan: _Plan) -> tuple[keras.Model, tf.data.Dataset | None]:
    """The compiled model (uint8 images of the pipeline's size -> [resize/augment] -> normalize -> the bare model,
    built or, for fine_tune, continued from a finished run) and the validation stream; then the run folder (only
    now: a mistake found so far leaves no run folder)."""
    input_shape = (plan.size, plan.size, plan.info.channels)
    options = plan.options
    bare = (
        _bare_from_run(options.init_from, options.unfreeze, input_shape)
        if options.init_from
        else models.build(
            options.model,
            input_shape,
            plan.num_classes,
            base=options.base,
            weights=options.weights,
            unfreeze=options.unfreeze,
            multi_label=plan.multi_label,
        )
    )
    model = assemble(
        bare,
        (*plan.input_size, plan.info.channels),
        plan.normalize(),
        plan.params if plan.augment_on == "model" else None,
        options,
    )
    _compile(model, options, plan.num_classes, plan.multi_label)
    validation = plan.stream(plan.validation, False) if plan.validation else None
    _prepare_run_folder(plan.out, options)
    return model, validation


def _saved(
    plan: _Plan, model: keras.Model, history: dict[str, list[float]], epochs: list[dict[str, float]]
) -> _Trained:
    """Save the model unless a checkpoint of the best validation epoch is there, then take the saved weights (the
    best epoch); loading them keeps the traced evaluation step."""
    path = os.path.join(plan.out, MODEL_FILE)
    if not os.path.exists(path) or not plan.validation:
        model.save(path)
    model.load_weights(path)

    def evaluate(stream: tf.data.Dataset) -> tuple[float, float]:
        if not model.compiled:
            _compile(model, plan.options, plan.num_classes, plan.multi_label)
        scores = model.evaluate(stream, verbose=0, return_dict=True)
        return scores["loss"], scores["accuracy"]

    return _Trained(model, history, epochs, evaluate)


def _write_results(plan: _Plan, trained: _Trained, started: float) -> dict[str, Any]:
    """History (and its plot), the test scores, run.json, preprocessing.json and metrics.json; returns the metrics."""
    out = plan.out
    _write_json(os.path.join(out, HISTORY_FILE), trained.history)
    plot_history(trained.history, os.path.join(out, PLOT_FILE))
    scores = trained.evaluate(plan.stream(plan.evaluation, False)) if plan.evaluation else (None, None)
    compute = None  # the compute-only probe measures one device; with several replicas it would mislead
    if plan.options.model != FEATURES and plan.strategy.num_replicas_in_sync == 1:
        compute = compute_seconds_per_step(trained.model, plan.stream(plan.training, False))
    run = {
        "data_dir": os.path.abspath(plan.data_dir),
        "class_names": plan.info.class_names,
        "image_size": plan.size,
        "input_size": list(plan.input_size),
        "channels": plan.info.channels,
        "model": plan.options.model,
        "multi_label": plan.multi_label,
        "labels_file": dataclasses.asdict(plan.info.labels_file) if plan.info.labels_file else None,
        "validation": plan.validation.recorded() if plan.validation else None,
        "options": dataclasses.asdict(plan.options),
    }
    _write_json(os.path.join(out, RUN_FILE), run)
    with open(os.path.join(out, preprocessing_lib.FILE), "w") as f:
        f.write(Preprocessing.of_dataset(plan.info, plan.input_size).to_json())
    metrics = _metrics(plan, trained, scores, compute, time.time() - started)
    if plan.multi_label:  # accuracy is then per class at 0.5
        metrics.update(
            multi_label.test_metrics(
                trained.model, plan.stream(plan.evaluation, False) if plan.evaluation else None, plan.info.class_names
            )
        )
    _write_json(os.path.join(out, METRICS_FILE), metrics)
    return metrics


def _metrics(
    plan: _Plan, trained: _Trained, scores: tuple[float | None, float | None], compute: float | None, seconds: float
) -> dict[str, Any]:
    """metrics.json: the test scores, what chose the model, throughput, and where each step ran."""
    history, epochs, size = trained.history, trained.epochs, plan.size
    test_loss, test_accuracy = scores
    stored = plan.info.stored_size
    return {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "evaluated_on": plan.evaluation.split if plan.evaluation else None,
        "validation": plan.validation.recorded() if plan.validation else None,
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else None,
        "epoch_seconds": [round(e["seconds"], 2) for e in epochs],
        "images_per_second": [round(e["images_per_second"], 1) for e in epochs],
        "input_wait_fraction": [round(f, 3) for f in input_wait_fractions(epochs, compute)] if compute else None,
        "compute_only_images_per_second": round(plan.batch_size / compute, 1) if compute else None,
        "augment_on": plan.augment_on if plan.params else None,
        "resize_on": None
        if stored == (size, size)
        else "model"
        if plan.augment_on == "model" and stored
        else "pipeline",
        "device": "GPU" if plan.gpus else "CPU",
        "strategy": "MultiWorkerMirroredStrategy" if plan.multi_worker else type(plan.strategy).__name__,
        "replicas": plan.strategy.num_replicas_in_sync,
        "params": trained.model.count_params(),
        "seconds": round(seconds, 1),
    }


def _start_line(plan: _Plan) -> str:
    """Where the run trains, at what size, where each step runs and what it validates on."""
    where = f"{plan.gpus} GPU(s)" if plan.gpus else "the CPU (no GPU visible to TensorFlow)"
    return (
        f"training {plan.options.model} on {where} at {plan.size}x{plan.size} ({plan.size_source}); "
        f"{_placement_text(plan.augment_on, plan.params, plan.info.stored_size, plan.size)}; validating on "
        f"{plan.validation.describe() if plan.validation else 'nothing'}"
        + (f", {plan.evaluation.describe()} only reported" if plan.evaluation else "")
    )


def assemble(
    bare: keras.Model,
    input_shape: tuple[int, int, int],
    normalize: Normalize,
    augment: dict[str, Any] | None,
    options: TrainOptions,
) -> keras.Model:
    """uint8 images of `input_shape` -> [Augment or Resize to the bare model's size: one resampling] ->
    Normalize -> the bare model (-> float32 output under mixed precision)."""
    inputs = keras.Input(input_shape, dtype="uint8", name="image")
    model_size = tuple(bare.input_shape[1:3])
    resize = model_size if model_size != tuple(input_shape[:2]) else None
    if augment:
        x = Augment(**augment, output_size=resize, seed=options.seed)(inputs)
    else:
        x = Resize(resize)(inputs) if resize else inputs
    x = bare(normalize(x))
    if options.mixed_precision:
        x = keras.layers.Activation("linear", dtype="float32", name="float32_output")(x)
    return keras.Model(inputs, x, name=f"shardflow_{options.model}")


def distribution_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy from TF_CONFIG, MirroredStrategy with several GPUs, else the default."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _filled(value: int | None) -> int:
    """A size `TrainOptions.with_model_defaults` has filled in."""
    if value is None:
        raise ValueError("the model's defaults are not filled in (`TrainOptions.with_model_defaults`)")
    return value


def _bare_from_run(run: str, unfreeze: int, input_shape: tuple[int, int, int]) -> keras.Model:
    """The trained bare transfer model inside the finished `run`, with the top `unfreeze` layers of its base
    unfrozen (fine-tuning after transfer learning, as the tutorials do)."""
    saved = keras.models.load_model(os.path.join(run, MODEL_FILE))
    bare = next(layer for layer in saved.layers if isinstance(layer, keras.Model))
    if tuple(bare.input_shape[1:]) != input_shape:
        raise ValueError(
            f"{run} was trained on {bare.input_shape[1:]} images, not {input_shape}; pass the same `image_size`"
        )
    models.unfreeze_top(bare, unfreeze)
    return bare


def _shard_policy(dataset: tf.data.Dataset, shards: int, replicas: int) -> tf.data.Dataset:
    """Across workers, split by shard file when there are enough files, else by record."""
    if replicas == 1:
        return dataset
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.FILE if shards >= replicas else policy.DATA
    return dataset.with_options(options)


def _check_run_folder(out: str, overwrite: bool) -> bool:
    """Refuse to write into an existing run (or any non-empty folder) unless `overwrite`, and then only a run;
    returns whether `out` holds a run to replace."""
    if not (os.path.isdir(out) and os.listdir(out)):
        return False
    is_run = any(os.path.exists(os.path.join(out, name)) for name in (MODEL_FILE, RUN_FILE, LOGS))
    if not is_run:  # (said first: `overwrite` cannot help here)
        raise ValueError(
            f"{out} is not empty and not a training run (no {MODEL_FILE}); `overwrite` will not replace it either, "
            "as it deletes only a run shardflow wrote: choose another `out`"
        )
    if not overwrite:
        raise ValueError(f"{out} holds a training run; pass `overwrite` to replace it, or choose another `out`")
    return True


def _prepare_run_folder(out: str, options: TrainOptions) -> None:
    """An empty run folder at `out` (see `_check_run_folder`), or the run to resume as it is."""
    if not options.resume and _check_run_folder(out, options.overwrite):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)


def _warnings(info: metadata.DatasetInfo, options: TrainOptions, validation: Part | None) -> list[str]:
    """What the user should know before training starts: choices that work, but probably not as meant."""
    said = []
    if validation is None:
        said.append("`validation_split` 0: checkpoints and early stopping follow the training loss")
    if metadata.TEST not in info.splits:
        said.append(
            f"{info.data_dir} has no test split: the run reports no test accuracy (convert with "
            "--splits train=0.8,validation=0.1,test=0.1 to make one)"
        )
    if options.model in ON_A_BASE and options.weights == "none" and not options.init_from:
        said.append(
            f"`weights` none: the {options.base} base starts from random weights"
            + (" and stays frozen, so only the head learns" if options.model != "fine_tune" else "")
            + "; pass `weights` imagenet (or a weights file) for transfer learning"
        )
    if info.damaged_jpegs:
        said.append(
            f"{info.damaged_jpegs} record(s) hold damaged JPEGs kept by --keep-damaged-jpegs, listed "
            f"with libjpeg's warning in {files.join(info.data_dir, metadata.DAMAGED_JPEGS)}: "
            "TensorFlow's decoder prints that warning, without the file's name, each time it reads one "
            "stored as it was"
        )
    return said


def _resume_warnings(plan: _Plan) -> list[str]:
    """Where a resumed run will not see exactly the batches of an uninterrupted one."""
    options, said = plan.options, []
    if (options.resume or options.checkpoint_every) and options.seed is None:
        said.append(
            "without a `seed` a resumed run continues at the step where it stopped, but in a new order: some images "
            "of that epoch are seen twice and others not at all; pass `seed` for an exact resume"
        )
    return said


def _check(info: metadata.DatasetInfo, options: TrainOptions) -> None:
    """What the options ask of this dataset (`TrainOptions` checks the options themselves)."""
    if metadata.TRAIN not in info.splits:
        raise metadata.DatasetError(f"{info.data_dir}: no {metadata.TRAIN!r} split to train on")
    if len(info.class_names) < 2:
        raise metadata.DatasetError(f"{info.data_dir}: unlabeled or single-class data cannot train a classifier")
    if options.model in ON_A_BASE and info.channels != 3:
        raise ValueError(f"{options.model} needs RGB images; this dataset has {info.channels} channel(s)")


def _augment_placement(options: TrainOptions, on_gpu: bool) -> str:
    """Where the resize to the model's size and the augmentation run: in the model (GPU), or fused into the CPU
    pipeline. XLA cannot compile the projective transform, so with --jit they stay out of the compiled model."""
    if options.jit or options.model == FEATURES:
        return "pipeline"
    if options.augment_on == "auto":
        return "model" if on_gpu else "pipeline"
    return options.augment_on


def _placement_text(augment_on: str, params: dict | None, stored_size: tuple[int, int] | None, size: int) -> str:
    """Which work the input pipeline does and which the model, for the start line."""
    resize = ["resize"] if stored_size != (size, size) else []
    augmentation = ["augmentation"] if params else []
    if augment_on == "model" and stored_size:
        pipeline, model = ["decode"], resize + augmentation
    elif augment_on == "model":
        pipeline, model = ["decode"] + resize, augmentation
    else:
        pipeline, model = ["decode"] + resize + augmentation, []
    text = f"{' + '.join(pipeline)} in the input pipeline (CPU)"
    if model:
        text += f", {' + '.join(model)} in the model"
    if augment_on == "model" and not stored_size:
        text += " (images of varying sizes: convert with --size to move the resize into the model)"
    return text


def _compile(model: keras.Model, options: TrainOptions, num_classes: int, multi_label: bool = False) -> None:
    name, lr = TRAINING_DEFAULTS[options.model]
    optimizer = keras.optimizers.get(
        {"class_name": options.optimizer or name, "config": {"learning_rate": options.lr or lr}}
    )
    model.compile(
        optimizer=optimizer,
        loss=models.loss_for(num_classes, multi_label),
        metrics=models.metrics_for(num_classes, multi_label),
        jit_compile=options.jit,
    )


def _callbacks(out: str, options: TrainOptions, validation: Part | None) -> list[keras.callbacks.Callback]:
    monitor = "val_loss" if validation else "loss"
    callbacks = [
        keras.callbacks.ModelCheckpoint(os.path.join(out, MODEL_FILE), monitor=monitor, save_best_only=True),
        keras.callbacks.TensorBoard(os.path.join(out, LOGS)),
    ]
    if options.patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, patience=options.patience, restore_best_weights=True)
        )
    return callbacks


def _write_json(path: str, value: Any) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=1, default=float)
