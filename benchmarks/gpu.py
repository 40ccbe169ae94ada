"""GPU training throughput, side by side in one run: does the GPU ever wait for its input?

For each model (small_convnet; mobilenet_v2 from random weights, the whole network trained), batch size and image
size, five inputs feed the same model with the tutorials' seed-004 augmentation:

  idg         tf_keras ImageDataGenerator.flow_from_directory (augmentation with scipy on the CPU, one Python
              thread), wrapped like model.fit wraps a generator (tf.data.Dataset.from_generator + prefetch)
  keras       keras.utils.image_dataset_from_directory, Keras' augmentation layers in the model (on the GPU)
  load-cpu    shardflow `load` of a --max-side dataset, resize + augmentation fused on the CPU
  load-gpu    shardflow `load(image_size=None)` of a --size dataset (decode only), `Augment` in the model (GPU)
  dali        shardflow `load(backend="dali")` of the --max-side dataset: nvJPEG decode, resize + augmentation on
              the GPU; skipped, with the reason, where NVIDIA DALI or the backend is missing

Every model normalizes inside itself (`Normalize`), so all five train the same network on the same pixels scale.

Measured per row: "input alone", images/s of the input iterator with nothing else running; "training", images/s
of a training loop; "model alone", images/s of the same training step fed one batch already in the device's
memory (the ceiling for any input); and `input_wait_fraction`, the share of training time the loop spent blocked in
`next(iterator)`. The loop is custom: each step gets the next batch (timed), then runs Keras' own `train_step`
(compiled with tf.function, loss scaling under --mixed-precision) and fetches the loss, so the step has finished
on the device before the next batch is asked for: time in `next` is time the GPU would sit idle. The table also
gives the wait `shardflow train` infers in metrics.json (`shardflow.trainers.throughput`: 1 - model-alone step
time / training step time) as a cross-check. Rows are interleaved: each round times every row once (a warm-up
first); the table gives medians over rounds. Goal (issue 15): input wait < 5% of step time for shardflow rows.

No XLA (the projective transform of `Augment` has no XLA kernel), the same for every row.

On a GPU machine (the full grid is not timed yet: ImageDataGenerator's rows take most of it; --rows, --models,
--batch-sizes and --sizes pick parts, --rounds 1 halves it):

    PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/gpu.py --json gpu.json [--mixed-precision]

Without a GPU it says so and runs only with --quick (tiny settings: a smoke test of every row, not a figure).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import inspect
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from common import (
    batch_images,
    image_data_generator,
    images_per_second,
    keras_augmentation,
    keras_image_dataset,
    markdown_table,
    sample_corpus,
)
from shardflow.beam_jobs.convert import ConvertOptions, convert
from shardflow.pipeline import Normalize, load
from shardflow.pipeline.augment import PRESETS
from shardflow.trainers import models
from shardflow.trainers.options import TRAINING_DEFAULTS, TrainOptions
from shardflow.trainers.throughput import input_wait_fractions
from shardflow.trainers.train import assemble

AUGMENT = PRESETS["seed004"]
GOAL = 0.05  # input wait below 5% of step time, for the shardflow rows
ROWS = {
    "idg": "ImageDataGenerator.flow_from_directory (CPU, scipy)",
    "keras": "image_dataset_from_directory + Keras layers in the model",
    "load-cpu": "shardflow load, --max-side, augmentation fused on the CPU",
    "load-gpu": "shardflow load(image_size=None), --size, Augment in the model",
    "dali": "shardflow load(backend='dali'), --max-side",
}
SHARDFLOW_ROWS = ("load-cpu", "load-gpu", "dali")
MODELS = ("small_convnet", "mobilenet_v2")
FULL = {
    "n": 4000,
    "models": MODELS,
    "batch_sizes": (32, 128),
    "sizes": (150, 224),
    "rounds": 2,
    "steps": 50,
    "seconds": 5.0,
    "warmup": 10,
}
QUICK = {
    "n": 48,
    "models": ("small_convnet",),
    "batch_sizes": (8,),
    "sizes": (48,),
    "rounds": 1,
    "steps": 3,
    "seconds": 0.0,
    "warmup": 1,
}


class Skipped(Exception):
    """A row that cannot run on this machine; the message says why."""


@dataclasses.dataclass
class Data:
    """The sample JPEGs (class folders) and, per image size, the converted datasets."""

    src: str
    max_side: dict[int, str]  # size -> a dataset stored at --max-side just above it (the demo's 160 for 150)
    fixed: dict[int, str]  # size -> a dataset stored at --size (decode only)


def gpu_name() -> str | None:
    """The first GPU's name as TensorFlow reports it, None without one. Lets it allocate memory as needed, so
    DALI finds memory beside TensorFlow."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:  # TensorFlow already started on the GPU: it keeps its whole-memory pool
            print(f"warning: GPU memory growth not set ({error}); DALI may find no memory left", file=sys.stderr)
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability")
    return (
        details.get("device_name", gpus[0].name)
        + (f" (compute capability {'.'.join(map(str, capability))})" if capability else "")
        + (f", {len(gpus)} GPUs visible (one used)" if len(gpus) > 1 else "")
    )


def prepare_data(work: str, src: str, sizes: tuple[int, ...], workers: int) -> Data:
    data = Data(src, {}, {})
    for size in sizes:
        for kind, options in (("max_side", {"max_side": -(-size * 16 // 15)}), ("fixed", {"size": size})):
            out = os.path.join(work, f"{kind}_{size}")
            print(f"converting {src} with {options}...", file=sys.stderr)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                convert(src, out, ConvertOptions(**options, splits={"train": 1.0}, workers=workers))
            getattr(data, kind)[size] = out
    return data


def input_for(row: str, data: Data, size: int, batch_size: int) -> tf.data.Dataset:
    """The row's endless stream of (images, labels) batches."""
    if row == "idg":
        missing = [name for name in ("tf_keras", "scipy") if importlib.util.find_spec(name) is None]
        if missing:
            raise Skipped(
                f"{' and '.join(missing)} not installed (ImageDataGenerator needs them: pip install "
                "tf-keras scipy, or shardflow's test extra)"
            )
        flow = image_data_generator(data.src, size, batch_size, AUGMENT, rescale=None)
        spec = (tf.TensorSpec([None, size, size, 3], tf.float32), tf.TensorSpec([None], tf.float32))
        return tf.data.Dataset.from_generator(lambda: iter(flow), output_signature=spec).prefetch(tf.data.AUTOTUNE)
    if row == "keras":
        return keras_image_dataset(data.src, size, batch_size).repeat().prefetch(tf.data.AUTOTUNE)
    if row == "load-cpu":
        return load(data.max_side[size], "train", batch_size=batch_size, image_size=size, augment=AUGMENT, repeat=True)
    if row == "load-gpu":
        return load(data.fixed[size], "train", batch_size=batch_size, image_size=None, repeat=True)
    if row == "dali":
        return dali_input(data.max_side[size], size, batch_size)
    raise ValueError(f"unknown row {row!r}; choose from {', '.join(ROWS)}")


def dali_input(data_dir: str, size: int, batch_size: int) -> tf.data.Dataset:
    """`load(backend="dali")`, or `Skipped` saying what is missing."""
    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
        raise Skipped(
            "nvidia.dali is not importable (pip install nvidia-dali-cuda120, then "
            "pip install --no-build-isolation nvidia-dali-tf-plugin-cuda120)"
        )
    if "backend" not in inspect.signature(load).parameters:
        raise Skipped("this shardflow's load has no backend argument yet (issue 15, item 3)")
    try:
        return load(
            data_dir, "train", batch_size=batch_size, image_size=size, augment=AUGMENT, repeat=True, backend="dali"
        )
    except (ImportError, ValueError, NotImplementedError) as error:
        raise Skipped(f"backend='dali' unavailable: {first_line(error)}") from error


def model_for(row: str, name: str, size: int, mixed_precision: bool) -> keras.Model:
    """`name` for `row`'s input, compiled with its tutorial optimizer: every row's model normalizes its input;
    the keras and load-gpu rows also augment in the model."""
    if name == "small_convnet":
        bare = models.build(name, (size, size, 3), 2)
        normalization, training = models.normalization_for(name), name
    else:
        bare = models.build("transfer", (size, size, 3), 2, base="mobilenet_v2", weights=None)
        for layer in bare.layers:
            layer.trainable = True  # the whole network learns (from random weights)
        normalization, training = models.normalization_for("transfer", "mobilenet_v2"), "transfer"
    normalize = Normalize(normalization)
    options = TrainOptions(model=training, mixed_precision=mixed_precision)
    if row in ("idg", "keras"):
        inputs = keras.Input((size, size, 3), dtype="float32", name="image")
        x = keras_augmentation()(inputs) if row == "keras" else inputs
        x = bare(normalize(x))
        if mixed_precision:
            x = keras.layers.Activation("linear", dtype="float32", name="float32_output")(x)
        model = keras.Model(inputs, x)
    else:
        model = assemble(bare, (size, size, 3), normalize, AUGMENT if row == "load-gpu" else None, options)
    optimizer, lr = TRAINING_DEFAULTS[training]
    model.compile(
        optimizer=keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": lr}}),
        loss=models.loss_for(2),
    )
    return model


class TimedTraining:
    """One row's model and input: training steps timed with the time blocked in `next`, and the model alone."""

    def __init__(self, model: keras.Model, batches: Iterator):
        self.batches = batches
        self.step = tf.function(model.train_step, reduce_retracing=True)

    def run(self) -> tuple[int, float]:
        """One step; returns its images and the seconds spent waiting for them."""
        asked = time.perf_counter()
        batch = next(self.batches)
        waited = time.perf_counter() - asked
        float(self.step(batch)["loss"])  # the step has finished on the device
        return batch_images(batch), waited

    def timed(self, warmup: int, steps: int, seconds: float) -> dict[str, float]:
        """After `warmup` steps, at least `steps` steps and `seconds`: their seconds, steps, images and waiting."""
        for _ in range(warmup):
            self.run()
        started, done, images, waited = time.perf_counter(), 0, 0, 0.0
        while done < steps or time.perf_counter() - started < seconds:
            step_images, step_waited = self.run()
            images, waited, done = images + step_images, waited + step_waited, done + 1
        return {"seconds": time.perf_counter() - started, "steps": done, "images": images, "waited": waited}

    def model_alone(self, steps: int, seconds: float) -> float:
        """Seconds per step on one batch already in the device's memory (no input at all)."""
        with tf.device("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"):
            batch = tf.nest.map_structure(tf.identity, next(self.batches))
        float(self.step(batch)["loss"])
        started, done = time.perf_counter(), 0
        while done < steps or time.perf_counter() - started < seconds:
            float(self.step(batch)["loss"])
            done += 1
        return (time.perf_counter() - started) / done


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def measure(args: argparse.Namespace, data: Data) -> list[dict[str, Any]]:
    """Every (model, batch size, size) with every row, rounds interleaved; one result per combination."""
    results = []
    for size in args.sizes:
        for batch_size in args.batch_sizes:
            inputs: dict[str, tf.data.Dataset] = {}
            skipped: dict[str, str] = {}
            for row in args.rows:
                try:
                    inputs[row] = input_for(row, data, size, batch_size)
                except Skipped as reason:
                    skipped[row] = str(reason)
                    print(f"{row}: skipped: {reason}", file=sys.stderr)
                except Exception as error:  # a row that fails is reported, the others go on
                    skipped[row] = f"failed: {first_line(error)}"
                    print(f"{row}: {skipped[row]}", file=sys.stderr)
            alone: dict[str, list[float]] = {row: [] for row in inputs}
            for round_ in range(args.rounds):
                for row, dataset in list(inputs.items()):
                    try:
                        alone[row].append(images_per_second(iter(dataset), args.steps, args.seconds / 2))
                    except Exception as error:
                        skipped[row] = f"failed: {first_line(error)}"
                        print(f"{row}: {skipped[row]}", file=sys.stderr)
                        del inputs[row]
                        continue
                    print(
                        f"round {round_ + 1}: {row}, batch {batch_size}, {size}x{size}, input alone: "
                        f"{alone[row][-1]:.0f} images/s",
                        file=sys.stderr,
                    )
            for name in args.models:
                results += train_rows(args, name, size, batch_size, inputs, alone, skipped)
    return results


def train_rows(
    args: argparse.Namespace,
    name: str,
    size: int,
    batch_size: int,
    inputs: dict[str, tf.data.Dataset],
    alone: dict[str, list[float]],
    skipped: dict[str, str],
) -> list[dict[str, Any]]:
    """One model at one batch size and image size, every row trained, rounds interleaved."""
    loops: dict[str, TimedTraining] = {}
    failed = dict(skipped)
    for row, dataset in inputs.items():
        try:
            loops[row] = TimedTraining(model_for(row, name, size, args.mixed_precision), iter(dataset))
        except Exception as error:
            failed[row] = f"failed: {first_line(error)}"
    rounds: dict[str, list[dict[str, float]]] = {row: [] for row in loops}
    for round_ in range(args.rounds):
        for row, loop in list(loops.items()):
            try:
                rounds[row].append(loop.timed(args.warmup, args.steps, args.seconds))
            except Exception as error:
                failed[row] = f"failed: {first_line(error)}"
                del loops[row]
                continue
            last = rounds[row][-1]
            print(
                f"round {round_ + 1}: {row}, {name}, batch {batch_size}, {size}x{size}: "
                f"{last['images'] / last['seconds']:.0f} images/s, "
                f"waiting {last['waited'] / last['seconds']:.1%}",
                file=sys.stderr,
            )
    results = []
    for row in args.rows:
        result: dict[str, Any] = {"row": row, "model": name, "batch_size": batch_size, "size": size}
        if row in failed:
            results.append(result | {"skipped": failed[row]})
            continue
        try:
            compute = loops[row].model_alone(args.steps, args.seconds / 2)
        except Exception as error:
            results.append(result | {"skipped": f"failed: {first_line(error)}"})
            continue
        epochs = [{"seconds": r["seconds"], "steps": r["steps"]} for r in rounds[row]]
        results.append(
            result
            | {
                "input_images_per_second": statistics.median(alone[row]),
                "training_images_per_second": statistics.median(r["images"] / r["seconds"] for r in rounds[row]),
                "model_alone_images_per_second": batch_size / compute,
                "input_wait_fraction": statistics.median(r["waited"] / r["seconds"] for r in rounds[row]),
                "inferred_input_wait_fraction": statistics.median(input_wait_fractions(epochs, compute)),
            }
        )
    return results


def goal(result: dict[str, Any]) -> str:
    if result["row"] not in SHARDFLOW_ROWS:
        return "-"
    if "skipped" in result:
        return "not run"
    return "PASS" if result["input_wait_fraction"] < GOAL else "FAIL"


def table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, then why each skipped row was skipped."""
    headers = [
        "input",
        "model",
        "batch",
        "size",
        "input alone img/s",
        "training img/s",
        "training vs idg",
        "model alone img/s",
        "input wait",
        "inferred wait",
        f"wait < {GOAL:.0%}",
    ]
    idg = {
        (r["model"], r["batch_size"], r["size"]): r.get("training_images_per_second")
        for r in results
        if r["row"] == "idg"
    }
    rows, reasons = [], {}
    for r in results:
        head = [r["row"], r["model"], r["batch_size"], f"{r['size']}x{r['size']}"]
        if "skipped" in r:
            reasons.setdefault(f"{r['row']}: {r['skipped']}", None)
            rows.append(head + ["skipped (below)", "", "", "", "", "", goal(r)])
            continue
        baseline = idg.get((r["model"], r["batch_size"], r["size"]))
        rows.append(
            head
            + [
                f"{r['input_images_per_second']:.0f}",
                f"{r['training_images_per_second']:.0f}",
                f"{r['training_images_per_second'] / baseline:.2f}x" if baseline else "-",
                f"{r['model_alone_images_per_second']:.0f}",
                f"{r['input_wait_fraction']:.1%}",
                f"{r['inferred_input_wait_fraction']:.1%}",
                goal(r),
            ]
        )
    return "\n".join([markdown_table(headers, rows), *(f"\nskipped {reason}" for reason in reasons)])


def listed(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    return lambda text: tuple(kind(item) for item in text.split(",") if item)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Rows: " + "; ".join(f"{k}: {v}" for k, v in ROWS.items()),
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"tiny settings for a smoke test (any machine): {QUICK}; options given win"
    )
    parser.add_argument("--rows", type=listed(str), default=tuple(ROWS), help="comma-separated (default: all)")
    parser.add_argument("--models", type=listed(str), help=f"comma-separated (default {','.join(FULL['models'])})")
    parser.add_argument("--batch-sizes", type=listed(int), help="comma-separated (default 32,128)")
    parser.add_argument("--sizes", type=listed(int), help="image sizes, comma-separated (default 150,224)")
    parser.add_argument("--n", type=int, help=f"sample images (default {FULL['n']})")
    parser.add_argument("--rounds", type=int, help=f"interleaved rounds (default {FULL['rounds']})")
    parser.add_argument("--steps", type=int, help=f"timed steps per row and round, at least (default {FULL['steps']})")
    parser.add_argument(
        "--seconds", type=float, help=f"and at least this many seconds per row and round (default {FULL['seconds']})"
    )
    parser.add_argument("--warmup", type=int, help=f"untimed steps before each timing (default {FULL['warmup']})")
    parser.add_argument("--mixed-precision", action="store_true", help="train in mixed_float16")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for option, values, known in (("--rows", args.rows, ROWS), ("--models", args.models, MODELS)):
        unknown = [v for v in values if v not in known]
        if unknown:
            parser.error(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    gpu = gpu_name()
    print(
        f"GPU: {gpu}"
        if gpu
        else "no GPU: TensorFlow sees none, so these are CPU figures"
        + (" (a smoke test, not a measurement)" if args.quick else "")
    )
    if not gpu and not args.quick:
        print("refusing a full run without a GPU (hours on a CPU); pass --quick for a smoke test", file=sys.stderr)
        return 2
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    with sample_corpus(args.n) as (work, src):
        data = prepare_data(work, src, args.sizes, workers=1 if args.quick else min(8, os.cpu_count() or 1))
        results = measure(args, data)
    print(
        f"\n{gpu or 'no GPU'}; {args.n} sample JPEGs (200-500 px); {os.cpu_count()} CPU cores; seed-004 "
        f"augmentation; {'mixed_float16' if args.mixed_precision else 'float32'}; median of {args.rounds} "
        f"interleaved round(s) of at least {args.steps} steps and {args.seconds:g} s\n"
    )
    print(table(results))
    verdicts = [goal(r) for r in results if r["row"] in SHARDFLOW_ROWS and "skipped" not in r]
    print(
        f"\ngoal (input wait < {GOAL:.0%} of step time for shardflow rows): {verdicts.count('PASS')} of "
        f"{len(verdicts)} shardflow rows PASS" + ("" if gpu else " (no GPU: not a verdict)")
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": gpu, "cpu_cores": os.cpu_count(), "options": vars(args), "results": results}, f, indent=1)
    failed = [r for r in results if r.get("skipped", "").startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
