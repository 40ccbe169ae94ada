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
import os
import shutil
import sys
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from shardflow.core import files, metadata
from shardflow.pipeline import Preprocessing, damaged_shards_named, load
from shardflow.pipeline import preprocessing as preprocessing_lib
from shardflow.pipeline.augment import Augment, parse_augment
from shardflow.pipeline.normalize import Normalize
from shardflow.pipeline.resize import Resize
from shardflow.trainers import models, multi_label
from shardflow.trainers.multi_worker import MultiWorkerLoop
from shardflow.trainers.options import AUGMENT_PLACES, MODELS, TRAINING_DEFAULTS, TrainOptions
from shardflow.trainers.plots import plot_history
from shardflow.trainers.throughput import EpochThroughput, compute_seconds_per_step, input_wait_fractions
from shardflow.trainers.validation import Part, validation_part

MODEL_FILE, RUN_FILE, HISTORY_FILE, PLOT_FILE, METRICS_FILE, LOGS = (
    "model.keras", "run.json", "history.json", "history.png", "metrics.json", "logs")


def train(data_dir: str, out: str, options: TrainOptions = TrainOptions()) -> dict[str, Any]:
    """Train `options.model` on the dataset in `data_dir`, write the run to `out`; returns metrics.json's content."""
    with damaged_shards_named(data_dir):
        return _train(data_dir, out, options)


def _train(data_dir: str, out: str, options: TrainOptions) -> dict[str, Any]:
    started = time.time()
    info = metadata.read(data_dir)
    _check(info, options)
    _check_run_folder(out, options.overwrite)
    size_source = options.image_size_source(info.stored_size)
    options = options.with_model_defaults(info.stored_size)
    if options.seed is not None:
        keras.utils.set_random_seed(options.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if options.mixed_precision else "float32")
    size = options.image_size
    params = parse_augment(options.augment)
    gpus = tf.config.list_physical_devices("GPU")
    on_gpu = bool(gpus)
    augment_on = _augment_placement(options, on_gpu)
    # In the model, the pipeline only decodes: the model takes the stored size (when the dataset has one).
    stored = info.stored_size if augment_on == "model" else None
    input_size = stored or (size, size)
    validation = validation_part(info, options.validation_split)
    training = Part(metadata.TRAIN, validation.holdout.rest() if validation and validation.holdout else None)
    evaluation = Part(metadata.TEST) if metadata.TEST in info.splits else None
    if options.verbose:
        where = f"{len(gpus)} GPU(s)" if gpus else "the CPU (no GPU visible to TensorFlow)"
        print(f"training {options.model} on {where} at {size}x{size} ({size_source}); "
              f"{_placement_text(augment_on, params, info.stored_size, size)}; validating on "
              f"{validation.describe() if validation else 'nothing'}"
              + (f", {evaluation.describe()} only reported" if evaluation else ""), file=sys.stderr)
    strategy = distribution_strategy()
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    for warning in _warnings(info, options, validation):
        print(f"warning: {warning}", file=sys.stderr)

    def stream(part: Part, train: bool) -> tf.data.Dataset:
        dataset = load(data_dir, part.split, batch_size=options.batch_size, image_size=input_size, shuffle=train,
                       seed=options.seed, augment=params if train and augment_on == "pipeline" else None,
                       cache=options.cache, holdout=part.holdout)
        return _shard_policy(dataset, len(info.split(part.split).shards), strategy.num_replicas_in_sync)

    input_shape = (size, size, info.channels)
    normalize = Normalize(models.normalization_for(options.model, options.base))
    with strategy.scope():
        if options.model == "features":
            model, history, epochs = _train_on_features(info, options, size, normalize, stream,
                                                        training, validation, out)
        else:
            bare = _bare_from_run(options, input_shape) if options.init_from else models.build(
                options.model, input_shape, len(info.class_names), base=options.base, weights=options.weights,
                unfreeze=options.unfreeze, multi_label=info.multi_label)
            model = assemble(bare, (*input_size, info.channels), normalize,
                             params if augment_on == "model" else None, options)
            _compile(model, options, len(info.class_names), info.multi_label)
            train_stream, validation_stream = stream(training, True), stream(validation, False) if validation else None
            _prepare_run_folder(out, options.overwrite)  # only now: a mistake found above leaves no run folder
            if multi_worker:
                loop = MultiWorkerLoop(model, strategy, models.loss_for(len(info.class_names), info.multi_label),
                                       info.multi_label)
                history, epochs = loop.fit(
                    train_stream, validation_stream,
                    epochs=options.epochs, steps_per_epoch=options.steps_per_epoch, patience=options.patience,
                    checkpoint=os.path.join(out, MODEL_FILE), verbose=options.verbose)
            else:
                throughput = EpochThroughput(options.batch_size)
                with warnings.catch_warnings():  # a held-out part's length is unknown until its first pass ends,
                    warnings.filterwarnings("ignore", "Your input ran out of data")  # which Keras calls running out
                    history = model.fit(
                        train_stream, validation_data=validation_stream,
                        epochs=options.epochs, steps_per_epoch=options.steps_per_epoch,
                        callbacks=_callbacks(out, options, validation) + [throughput], verbose=options.verbose,
                        shuffle=False,  # `load` shuffles (Keras would only warn that it cannot)
                    ).history
                epochs = throughput.epochs
    if not multi_worker and (not os.path.exists(os.path.join(out, MODEL_FILE)) or not validation):
        model.save(os.path.join(out, MODEL_FILE))  # (the multi-worker loop saves on every improvement)
    _write_json(os.path.join(out, HISTORY_FILE), history)
    plot_history(history, os.path.join(out, PLOT_FILE))
    if multi_worker:  # the loop restored the best weights; Keras' evaluate fails under this strategy
        scores = loop.evaluate(stream(evaluation, False)) if evaluation else {"loss": None, "accuracy": None}
        test_loss, test_accuracy = scores["loss"], scores["accuracy"]
    else:  # the saved model holds the best epoch; loading its weights keeps the traced evaluation step
        model.load_weights(os.path.join(out, MODEL_FILE))
        if not model.compiled:
            _compile(model, options, len(info.class_names), info.multi_label)
        scores = model.evaluate(stream(evaluation, False), verbose=0, return_dict=True) if evaluation else {}
        test_loss, test_accuracy = scores.get("loss"), scores.get("accuracy")
    compute = None  # the compute-only probe measures one device; with several replicas it would mislead
    if options.model != "features" and strategy.num_replicas_in_sync == 1:
        compute = compute_seconds_per_step(model, stream(training, False))
    run = {"data_dir": os.path.abspath(data_dir), "class_names": info.class_names, "image_size": size,
           "input_size": list(input_size), "channels": info.channels, "model": options.model,
           "multi_label": info.multi_label,
           "labels_file": dataclasses.asdict(info.labels_file) if info.labels_file else None,
           "validation": validation.recorded() if validation else None,
           "options": dataclasses.asdict(options)}
    _write_json(os.path.join(out, RUN_FILE), run)
    with open(os.path.join(out, preprocessing_lib.FILE), "w") as f:
        f.write(Preprocessing.of_dataset(info, input_size).to_json())
    metrics = {
        "test_accuracy": test_accuracy, "test_loss": test_loss,
        "evaluated_on": evaluation.split if evaluation else None,
        "validation": validation.recorded() if validation else None,
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else None,
        "epoch_seconds": [round(e["seconds"], 2) for e in epochs],
        "images_per_second": [round(e["images_per_second"], 1) for e in epochs],
        "input_wait_fraction": [round(f, 3) for f in input_wait_fractions(epochs, compute)]
        if compute else None,
        "compute_only_images_per_second": round(options.batch_size / compute, 1) if compute else None,
        "augment_on": augment_on if params else None,
        "resize_on": None if info.stored_size == (size, size) else "model" if stored else "pipeline",
        "device": "GPU" if on_gpu else "CPU",
        "strategy": "MultiWorkerMirroredStrategy" if multi_worker else type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
        "params": model.count_params(), "seconds": round(time.time() - started, 1),
    }
    if info.multi_label:  # accuracy is then per class at 0.5
        metrics.update(multi_label.test_metrics(model, stream(evaluation, False) if evaluation else None,
                                                info.class_names))
    _write_json(os.path.join(out, METRICS_FILE), metrics)
    return metrics


def assemble(bare: keras.Model, input_shape: tuple[int, int, int], normalize: Normalize,
             augment: dict[str, Any] | None, options: TrainOptions) -> keras.Model:
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


def _bare_from_run(options: TrainOptions, input_shape: tuple[int, int, int]) -> keras.Model:
    """The trained bare transfer model inside a finished run, with the top of its base unfrozen (fine-tuning
    after transfer learning, as the tutorials do)."""
    saved = keras.models.load_model(os.path.join(options.init_from, MODEL_FILE))
    bare = next(layer for layer in saved.layers if isinstance(layer, keras.Model))
    if tuple(bare.input_shape[1:]) != input_shape:
        raise ValueError(f"{options.init_from} was trained on {bare.input_shape[1:]} images, not {input_shape}; "
                         "pass the same --image-size")
    models.unfreeze_top(bare, options.unfreeze)
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
    if not overwrite:
        what = "holds a training run" if is_run else "exists and is not empty"
        raise ValueError(f"{out} {what}; pass --overwrite to replace it, or choose another --out")
    if not is_run:
        raise ValueError(f"{out} is not a training run; refusing to delete it, even with --overwrite")
    return True


def _prepare_run_folder(out: str, overwrite: bool) -> None:
    """An empty run folder at `out` (see `_check_run_folder`)."""
    if _check_run_folder(out, overwrite):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)


def _warnings(info: metadata.DatasetInfo, options: TrainOptions, validation: Part | None) -> list[str]:
    """What the user should know before training starts: choices that work, but probably not as meant."""
    warnings = []
    if validation is None:
        warnings.append("--validation-split 0: checkpoints and early stopping follow the training loss")
    if metadata.TEST not in info.splits:
        warnings.append(f"{info.data_dir} has no test split: the run reports no test accuracy (convert with "
                        "--splits train=0.8,validation=0.1,test=0.1 to make one)")
    if options.model in ("transfer", "fine_tune", "features") and options.weights == "none" and not options.init_from:
        warnings.append(f"--weights none: the {options.base} base starts from random weights"
                        + (" and stays frozen, so only the head learns" if options.model != "fine_tune" else "")
                        + "; pass --weights imagenet (or a weights file) for transfer learning")
    if info.damaged_jpegs:
        warnings.append(f"{info.damaged_jpegs} record(s) hold damaged JPEGs kept by --keep-damaged-jpegs, listed "
                        f"with libjpeg's warning in {files.join(info.data_dir, metadata.DAMAGED_JPEGS)}: "
                        "TensorFlow's decoder prints that warning, without the file's name, each time it reads one "
                        "stored as it was")
    return warnings


def _check(info: metadata.DatasetInfo, options: TrainOptions) -> None:
    if options.model not in MODELS:
        raise ValueError(f"unknown model {options.model!r}; choose one of {', '.join(MODELS)}")
    if metadata.TRAIN not in info.splits:
        raise metadata.DatasetError(f"{info.data_dir}: no {metadata.TRAIN!r} split to train on")
    if len(info.class_names) < 2:
        raise metadata.DatasetError(f"{info.data_dir}: unlabeled or single-class data cannot train a classifier")
    if options.init_from and options.model != "fine_tune":
        raise ValueError("--init-from is for --model fine_tune (it continues a finished transfer run)")
    if options.epochs < 1 or (options.batch_size is not None and options.batch_size < 1):
        raise ValueError("--epochs and --batch-size must be at least 1")
    if options.image_size is not None and not 8 <= options.image_size <= 4096:
        raise ValueError(f"--image-size must be between 8 and 4096 pixels, got {options.image_size}")
    if options.model in ("transfer", "fine_tune", "features") and info.channels != 3:
        raise ValueError(f"{options.model} needs RGB images; this dataset has {info.channels} channel(s)")
    if options.augment_on not in AUGMENT_PLACES:
        raise ValueError(f"augment_on must be one of {', '.join(AUGMENT_PLACES)}, got {options.augment_on!r}")


def _augment_placement(options: TrainOptions, on_gpu: bool) -> str:
    """Where the resize to the model's size and the augmentation run: in the model (GPU), or fused into the CPU
    pipeline. XLA cannot compile the projective transform, so with --jit they stay out of the compiled model."""
    if options.jit or options.model == "features":
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
    optimizer = keras.optimizers.get({"class_name": options.optimizer or name,
                                      "config": {"learning_rate": options.lr or lr}})
    model.compile(optimizer=optimizer, loss=models.loss_for(num_classes, multi_label),
                  metrics=models.metrics_for(num_classes, multi_label), jit_compile=options.jit)


def _callbacks(out: str, options: TrainOptions, validation: Part | None) -> list[keras.callbacks.Callback]:
    monitor = "val_loss" if validation else "loss"
    callbacks = [
        keras.callbacks.ModelCheckpoint(os.path.join(out, MODEL_FILE), monitor=monitor, save_best_only=True),
        keras.callbacks.TensorBoard(os.path.join(out, LOGS)),
    ]
    if options.patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=options.patience,
                                                       restore_best_weights=True))
    return callbacks


def _train_on_features(info, options, size, normalize, stream, training, validation, out):
    """Feature extraction: run the frozen base once per part (of the training part, `steps_per_epoch` batches if
    set), then train a small head on the features."""
    extractor_input = keras.Input((size, size, 3), dtype="uint8", name="image")
    base = models.feature_extractor(options.base, (size, size, 3), options.weights)
    extractor = keras.Model(extractor_input, base(normalize(extractor_input)))

    def features(part: Part, batches: int | None = None) -> tf.data.Dataset:
        outputs, labels = [], []
        for images, batch_labels in stream(part, False).take(batches or -1):
            outputs.append(extractor(images, training=False).numpy())
            labels.append(batch_labels.numpy())
        return tf.data.Dataset.from_tensor_slices((np.concatenate(outputs), np.concatenate(labels)))

    head = models.features_head(tuple(base.output.shape[1:]), len(info.class_names), info.multi_label)
    _compile(head, options, len(info.class_names), info.multi_label)
    _prepare_run_folder(out, options.overwrite)  # only now: a mistake found above leaves no run folder
    train_features = features(training, options.steps_per_epoch)
    train_features = train_features.shuffle(4096, seed=options.seed).batch(options.batch_size)
    throughput = EpochThroughput(options.batch_size)
    history = head.fit(train_features, epochs=options.epochs,
                       validation_data=features(validation).batch(options.batch_size) if validation else None,
                       callbacks=[throughput] + ([keras.callbacks.EarlyStopping(
                           patience=options.patience, restore_best_weights=True)] if options.patience else []),
                       verbose=options.verbose, shuffle=False).history
    model = keras.Model(extractor_input, head(extractor(extractor_input)), name="shardflow_features")
    model.save(os.path.join(out, MODEL_FILE))
    return model, history, throughput.epochs


def _write_json(path: str, value: Any) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=1, default=float)
