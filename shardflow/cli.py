"""`shardflow ...`: a thin command-line layer over the Python API."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the terminal

import shardflow  # noqa: E402  (after the environment is set)
from shardflow.core import labels as labels_lib  # noqa: E402
from shardflow.core import metadata, quiet  # noqa: E402


SUMMARY_MAX_CLASSES = 12  # more classes: the end-of-run summary gives their range per split
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "convert":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    quiet.quiet_beam_imports()
    try:
        if getattr(args, "uses_tensorflow", False):
            quiet.start_tensorflow()
        return args.handler(args, extra) or 0
    except (UsageError, ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"shardflow {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `shardflow inspect DATA | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _parser() -> argparse.ArgumentParser:
    """Every default and choice comes from the Python API's own (options dataclasses, function signatures)."""
    from shardflow.beam_jobs.options import add_arguments
    from shardflow.core.pictures import DUPLICATE_GROUPS
    from shardflow.testing.sample_data import write_sample_data
    from shardflow.tools.preview import preview_grid
    from shardflow.trainers.options import AUGMENT_PLACES, BASES, MODELS, THRESHOLD, VALIDATION_SPLIT, TrainOptions

    parser = argparse.ArgumentParser(prog="shardflow", description=shardflow.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help: str, uses_tensorflow: bool = False, **kwargs) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)
        sub.set_defaults(handler=handler, uses_tensorflow=uses_tensorflow)
        return sub

    sample_defaults = _defaults(write_sample_data)
    sample = command("sample-data", _sample_data, "write a learnable synthetic JPEG dataset")
    sample.add_argument("out", help="the folder to write the images to")
    sample.add_argument("--layout", choices=("kaggle", "folders"), default=sample_defaults["layout"],
                        help="kaggle: cat.0.jpg names in one folder; folders: one folder per class")
    sample.add_argument("--n", type=int, default=sample_defaults["n"], help="number of images")
    sample.add_argument("--classes", default=",".join(sample_defaults["classes"]), help="comma-separated class names")
    sample.add_argument("--seed", type=int, default=sample_defaults["seed"], help="the same seed, the same images")

    convert = command(
        "convert", _convert, "convert images (folder, .zip, .tar[.gz], IDX) to sharded TFRecords",
        description="Convert raw images into a sharded, TFDS-compatible TFRecord dataset with Apache Beam. "
        "Beam pipeline options (--runner, --project, --job_endpoint, ...) go to Beam unchanged; any other "
        "option is refused.",
    )
    add_arguments(convert)
    convert.add_argument("--like", metavar="DATASET",
                         help="repeat DATASET's conversion: every option from its shardflow.json (only --workers and "
                              "--overwrite apply); says whether the shards came out byte-identical, or what changed")
    convert.set_defaults(shaping_defaults={dest: convert.get_default(dest) for dest in _SHAPING})

    inspect = command("inspect", _inspect, "show a dataset's splits, classes, statistics and duplicates")
    inspect.add_argument("data", help="a dataset folder written by `shardflow convert`")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--duplicates", metavar="FILE.png",
                         help="draw the groups of duplicates side by side, a row each (leaks first), into this PNG")
    inspect.add_argument("--groups", type=int, metavar="N",
                         help=f"with --duplicates: draw at most N groups (default {DUPLICATE_GROUPS})")

    verify = command("verify", _verify, "check checksums, record CRCs, counts and images of a dataset",
                     uses_tensorflow=True)
    verify.add_argument("data", help="a dataset folder written by `shardflow convert`")
    verify.add_argument("--no-decode", action="store_true", help="skip decoding the images (faster)")

    preview_defaults = _defaults(preview_grid)
    preview = command("preview", _preview, "a grid of images (and augmented versions) as a PNG", uses_tensorflow=True)
    preview.add_argument("data", help="a dataset folder written by `shardflow convert`")
    preview.add_argument("--out", required=True, help="the PNG file to write")
    preview.add_argument("--split", default=preview_defaults["split"], help="the split to show")
    preview.add_argument("--augment", help="none, a preset (seed004) or ImageDataGenerator arguments as JSON")
    preview.add_argument("--images", type=int, default=preview_defaults["images"], help="rows")
    preview.add_argument("--variants", type=int, default=preview_defaults["variants"],
                         help="augmented versions per image")
    preview.add_argument("--image-size", type=int, default=preview_defaults["image_size"], help="pixels per side")
    preview.add_argument("--seed", type=int, default=preview_defaults["seed"], help="which images and augmentations")

    serve = command("serve-data", _serve_data, "start a tf.data service dispatcher and workers here",
                    uses_tensorflow=True)
    serve.add_argument("--port", type=int, default=5050, help="the dispatcher's port")
    serve.add_argument("--workers", type=int, default=2, help="worker processes")

    train = command("train", _train, "train a tutorial model on a converted dataset", uses_tensorflow=True)
    options = TrainOptions()
    train.add_argument("data", help="a dataset folder written by `shardflow convert`")
    train.add_argument("--model", default=options.model, choices=MODELS, help="the tutorial architecture")
    train.add_argument("--out", required=True, help="the run folder to write")
    train.add_argument("--epochs", type=int, default=options.epochs)
    train.add_argument("--batch-size", type=int, help="default 32 (64 for the features head)")
    train.add_argument("--image-size", type=int,
                       help="default: the dataset's size when it is stored at one square size (convert --size), "
                            "else 150 (28 for MNIST models, 160 for transfer)")
    train.add_argument("--validation-split", type=float,
                       help=f"for a dataset without a validation split: the fraction of train held out (by a "
                            f"stable hash of each path) to choose epochs and checkpoints; default "
                            f"{VALIDATION_SPLIT:g}; 0: none. The test split is never used to choose")
    train.add_argument("--augment", default=options.augment,
                       help="none, seed004 or ImageDataGenerator arguments as JSON")
    train.add_argument("--augment-on", default=options.augment_on, choices=AUGMENT_PLACES,
                       help="where the resize to --image-size and the augmentation run; auto: in the model (the "
                            "pipeline only decodes the stored size) with a GPU, else in the CPU pipeline")
    train.add_argument("--optimizer", help="default: the tutorial's (rmsprop or adam)")
    train.add_argument("--lr", type=float, help="learning rate (default: the tutorial's)")
    train.add_argument("--patience", type=int, help="early stopping after N epochs without better val_loss")
    train.add_argument("--mixed-precision", action="store_true")
    train.add_argument("--jit", action="store_true", help="XLA-compile the model")
    train.add_argument("--seed", type=int, help="repeatable shuffling, augmentation and initial weights")
    train.add_argument("--base", default=options.base, choices=tuple(BASES),
                       help="the Keras-applications base of transfer, fine_tune and features")
    train.add_argument("--weights", default=options.weights, help="imagenet (downloads), a weights file, or none")
    train.add_argument("--unfreeze", type=int, default=options.unfreeze, help="fine_tune: top layers of the base to train")
    train.add_argument("--init-from", help="fine_tune: a finished transfer run to continue from (its model.keras)")
    train.add_argument("--steps-per-epoch", type=int, help="limit each epoch (quick trials)")
    train.add_argument("--cache", action="store_true", help="keep decoded images in memory after epoch 1")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in OUT")

    evaluate = command("evaluate", _evaluate, "a run's loss and accuracy on a dataset split", uses_tensorflow=True)
    evaluate.add_argument("run", help="a run folder written by `shardflow train`")
    evaluate.add_argument("data", help="a dataset folder written by `shardflow convert`")
    evaluate.add_argument("--split", default=metadata.TEST, help="the split to evaluate on")

    diff = command("diff", _diff, "what changed between two versions of a dataset (exit 1 if anything did)",
                   uses_tensorflow=True)
    diff.add_argument("old", help="the earlier dataset folder")
    diff.add_argument("new", help="the later dataset folder")
    diff.add_argument("--json", action="store_true", help="machine-readable output")

    predict = command("predict", _predict, "classify images, folders or a converted split with a run",
                      uses_tensorflow=True)
    predict.add_argument("run", help="a run folder written by `shardflow train`")
    predict.add_argument("paths", nargs="+", help="image files, folders of images, or dataset folders")
    predict.add_argument("--split", default=metadata.TEST, help="the split, when a path is a converted dataset")
    predict.add_argument("--csv", help="write Kaggle's submission format here: id,label, or the shape of the CSV file "
                                       "the dataset's labels came from (convert --labels)")
    predict.add_argument("--threshold", type=float, default=THRESHOLD,
                         help="multi-label: name the classes whose probability is above this")
    return parser


def _defaults(function) -> dict:
    """A function's keyword defaults, so the CLI shows (and uses) the API's own."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _sample_data(args, _extra) -> None:
    from shardflow.testing.sample_data import write_sample_data

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    paths = write_sample_data(args.out, layout=args.layout, n=args.n, classes=classes, seed=args.seed)
    print(f"wrote {len(paths)} images ({', '.join(classes)}) to {args.out}")


def _convert(args, beam_args) -> int | None:
    try:
        return _convert_now(args, beam_args)
    except KeyboardInterrupt:  # before OUT was touched (while importing Beam, listing the source)
        print("shardflow convert: interrupted", file=sys.stderr)
        return INTERRUPTED


def _convert_now(args, beam_args) -> int | None:
    from shardflow.beam_jobs.convert import ConversionInterrupted, convert
    from shardflow.beam_jobs.options import from_arguments

    if args.like:
        return _convert_like(args, beam_args)
    options = from_arguments(args)
    try:
        info = convert(args.src, args.out, options, beam_args)
    except ConversionInterrupted as interrupted:
        print(f"shardflow convert: {interrupted}", file=sys.stderr)
        return INTERRUPTED
    print(_summary_text(info, args.out))


def _convert_like(args, beam_args) -> int:
    """`convert SRC OUT --like DATASET`: DATASET's options on SRC, then whether the result is the same."""
    from shardflow.beam_jobs.convert import convert
    from shardflow.beam_jobs.options import ConvertOptions
    from shardflow.tools.diff import diff, same_shards

    given = [f"--{dest.replace('_', '-')}" for dest, default in args.shaping_defaults.items()
             if getattr(args, dest) != default]
    if given:
        raise UsageError(f"--like takes every option from {args.like}; drop {', '.join(given)}")
    recorded = metadata.read(args.like)
    if recorded.provenance is None:
        raise UsageError(f"{args.like} records no conversion options (made by a shardflow before 0.2)")
    info = convert(args.src, args.out, ConvertOptions.like(recorded.provenance.options, workers=args.workers,
                                                           overwrite=args.overwrite), beam_args)
    print(_summary_text(info, args.out))
    same_source = info.provenance.source_fingerprint == recorded.provenance.source_fingerprint
    if same_shards(recorded, info):
        print(f"identical to {args.like}: every shard byte for byte" + ("" if same_source else
              " (the source's fingerprint differs: files changed that no record depends on)"))
        return 0
    changes = diff(args.like, args.out)
    print(f"differs from {args.like}: " + ("the same source (same fingerprint), other shards: "
                                          "made by another shardflow version?" if same_source else
                                          "the source changed since it was made"))
    for kind, paths in changes.examples.items():
        if paths:
            print(f"  {kind}: {', '.join(paths)}")
    return 1


# convert's options that shape a dataset (--like takes them all from it)
_SHAPING = ("name", "layout", "unlabeled", "class_names", "zip_encoding", "splits", "split_counts",
            "split_counts_allow_fewer", "validation_from_train", "other_split_names", "channels", "image_format",
            "max_side", "size", "crop_to_aspect_ratio", "quality", "shard_size_mb", "dedupe", "keep_damaged_jpegs",
            "version", "description", "homepage", "license", "citation", "labels", "id_column", "label_columns",
            "label_separator", "multi_label")


def _inspect(args, _extra) -> None:
    from shardflow.core.pictures import DUPLICATE_GROUPS
    from shardflow.tools.inspect import inspect_json, inspect_text
    from shardflow.tools.preview import draw_duplicates

    if args.groups is not None and not args.duplicates:
        raise UsageError("--groups N applies to the picture of --duplicates FILE.png; give that too")
    if args.groups is not None and args.groups < 1:
        raise UsageError("--groups must be >= 1")
    info = metadata.read(args.data)
    if args.json:
        print(json.dumps(inspect_json(info), indent=1))
    else:
        groups = metadata.read_duplicates(args.data) if info.duplicates and info.duplicates.listed else []
        print(inspect_text(info, groups))
    if args.duplicates:
        out = draw_duplicates(args.data, args.duplicates, args.groups or DUPLICATE_GROUPS)
        print(f"wrote {out}", file=sys.stderr if args.json else sys.stdout)


def _verify(args, _extra) -> int:
    from shardflow.tools.verify import verify

    report = verify(args.data, decode_images=not args.no_decode)
    for problem in report.problems:
        print(f"{args.data}: {problem}")
    for shard in report.shards:
        for problem in shard.problems:
            print(f"{shard.split}: {shard.filename}: {problem}")
    for note in report.notes:
        print(f"{args.data}: {note}")
    if report.ok:
        print(f"{args.data}: OK, {report.records} records in {len(report.shards)} shards verified"
              + (f"; {report.damaged_kept} of them damaged JPEGs kept by --keep-damaged-jpegs (listed in "
                 f"{metadata.DAMAGED_JPEGS})" if report.damaged_kept else ""))
        return 0
    bad = sum(1 for s in report.shards if s.problems)
    print(f"{args.data}: FAILED, {bad} of {len(report.shards)} shards (or their record indexes) damaged",
          file=sys.stderr)
    return 1


def _preview(args, _extra) -> None:
    from shardflow.tools.preview import preview_grid

    if args.images < 1 or args.variants < 0 or args.image_size < 8:
        raise UsageError("--images must be >= 1, --variants >= 0 and --image-size >= 8")
    out = preview_grid(args.data, args.out, split=args.split, augment=args.augment, images=args.images,
                       variants=args.variants, image_size=args.image_size, seed=args.seed)
    print(f"wrote {out}")


def _serve_data(args, _extra) -> None:
    from shardflow.pipeline.service import serve

    serve(args.port, args.workers)


def _train(args, _extra) -> None:
    from shardflow.trainers.options import TrainOptions
    from shardflow.trainers.train import train

    options = TrainOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TrainOptions)
                              if hasattr(args, field.name)})
    metrics = train(args.data, args.out, options)
    rates = metrics["images_per_second"]
    wait = metrics["input_wait_fraction"]
    scores = (f"test accuracy {metrics['test_accuracy']:.3f}, loss {metrics['test_loss']:.3f}"
              + (f", macro AUC {_score(metrics['test_auc'])}, macro F1 {metrics['test_f1']:.3f}" if "test_f1" in metrics
                 else "") + f" ({metrics['evaluated_on']} split)" if metrics["evaluated_on"] else
              "not evaluated (no test split)")
    print(f"{args.out}: {scores}, {metrics['epochs_run']} epochs in {metrics['seconds']:.0f} s; "
          f"last epoch {rates[-1]:.0f} images/s" + (f", {wait[-1]:.0%} of step time waiting for input" if wait else ""))


def _evaluate(args, _extra) -> None:
    from shardflow.trainers.predict import evaluate

    result = evaluate(args.run, args.data, args.split)
    print(f"{args.split}: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}"
          + (f", macro AUC {result['auc']:.4f}, macro F1 {result['f1']:.4f}" if "f1" in result else "")
          + f" on {result['num_examples']} images")


def _diff(args, _extra) -> int:
    from shardflow.tools.diff import KINDS, diff

    result = diff(args.old, args.new)
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
        return 0 if result.identical else 1
    totals = sum(result.counts.values(), Counter())
    print(f"{args.old} -> {args.new}: " + ", ".join(f"{totals[k]} {k}" for k in KINDS)
          + f"; {result.moved} file(s) moved to another split")
    print(f"  {'split/class':<24}" + "".join(f"{k:>11}" for k in KINDS))
    for key, counts in result.counts.items():
        print(f"  {key:<24}" + "".join(f"{counts[k]:>11}" for k in KINDS))
    for kind, paths in result.examples.items():
        if paths:
            print(f"  {kind}: {', '.join(paths)}" + (" ..." if totals[kind] > len(paths) else ""))
    return 0 if result.identical else 1


def _predict(args, _extra) -> None:
    from shardflow.trainers.predict import predict, run_labels_file, run_preprocessing, write_submission

    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold:g}")
    predictions = predict(args.run, args.paths, args.split, args.threshold)
    unread = [p for p in predictions if p.problem]
    for prediction in predictions:
        print(prediction.sentence(), file=sys.stderr if prediction.problem else sys.stdout)
    if args.csv:
        write_submission(predictions, args.csv, run_preprocessing(args.run).class_names, run_labels_file(args.run))
        print(f"wrote {len(predictions)} predictions to {args.csv}"
              + (f" ({len(unread)} without a label: their files could not be read)" if unread else ""))
    if unread:
        print(f"{len(unread)} of {len(predictions)} inputs could not be read (listed above)", file=sys.stderr)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _summary_text(info: metadata.DatasetInfo, out: str) -> str:
    rate = info.num_inputs / max(info.seconds, 1e-9)
    lines = [
        f"converted {info.num_inputs} inputs in {info.seconds:.1f} s ({rate:.0f} inputs/s): "
        f"{info.num_records} records, {info.num_rejected} rejected"
        + (f" (reasons in {out}/{metadata.REJECTS})" if info.num_rejected else "")
        + (f", {info.num_unselected} not selected by --split-counts" if info.num_unselected else "")
    ]
    if info.duplicates and (info.duplicates.near.groups or info.duplicates.removed):
        lines.append(f"  duplicates: {info.duplicates.sentence()}")
    if info.labels_file:
        lines.append(f"  {labels_lib.source_sentence(info.labels_file, info.multi_label)}")
    if info.debris:
        lines.append(f"  skipped {len(info.debris)} macOS/Windows system file(s) such as {info.debris[0]!r} "
                     f"(listed in {out}/{metadata.SHARDFLOW_INFO})")
    for name, split in info.splits.items():
        lines.append(f"  {name:<11} {split.num_examples:>7} records in {len(split.shards)} shard(s)  "
                     f"({_class_counts(split.label_counts, info.class_names)})")
    lines += [f"warning: {warning}" for warning in info.warnings]
    lines.append(f"dataset: {out}")
    return "\n".join(lines)


def _class_counts(counts: dict[str, int], class_names: Sequence[str]) -> str:
    """Records per class of one split; with many classes, their range instead of every class."""
    if len(counts) <= SUMMARY_MAX_CLASSES and len(class_names) <= SUMMARY_MAX_CLASSES:
        return ", ".join(f"{c} {n}" for c, n in counts.items())
    values = [counts.get(c, 0) for c in class_names] or list(counts.values())
    present = sum(1 for v in values if v)
    return (f"{present} of {len(values)} classes, {min(values)}-{max(values)} per class; "
            "`shardflow inspect` lists them")


if __name__ == "__main__":
    sys.exit(main())
