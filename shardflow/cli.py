"""`shardflow ...`: a thin command-line layer over the Python API."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the terminal

import shardflow  # noqa: E402  (after the environment is set)
from shardflow import metadata, quiet  # noqa: E402


SUMMARY_MAX_CLASSES = 12  # more classes: the end-of-run summary gives their range per split
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "convert":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if getattr(args, "uses_tensorflow", False):
            quiet.start_tensorflow()
        return args.handler(args, extra) or 0
    except (UsageError, ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"shardflow {args.command}: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardflow", description=shardflow.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample-data", help="write a learnable synthetic JPEG dataset")
    sample.add_argument("out")
    sample.add_argument("--layout", choices=("kaggle", "folders"), default="kaggle")
    sample.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    sample.add_argument("--classes", default="cat,dog", help="comma-separated class names (default cat,dog)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=_sample_data)

    convert = commands.add_parser(
        "convert",
        help="convert images (folder, .zip, .tar[.gz], IDX) to sharded TFRecords",
        description="Convert raw images into a sharded, TFDS-compatible TFRecord dataset with Apache Beam. "
        "Beam pipeline options (--runner, --project, --job_endpoint, ...) go to Beam unchanged; any other "
        "option is refused.",
    )
    convert.add_argument("src", help="a folder, a .zip, a .tar/.tar.gz/.tgz, or a folder of IDX files")
    convert.add_argument("out", help="the dataset folder to create")
    convert.add_argument("--name", help="dataset name used in shard file names (default: from SRC)")
    convert.add_argument("--layout", default="auto", choices=("auto", "kaggle", "folders", "idx"))
    convert.add_argument("--unlabeled", action="store_true", help="no labels (e.g. Kaggle's test1/): label -1")
    convert.add_argument("--class-names", help="comma-separated class order (default: sorted)")
    convert.add_argument("--splits", default="train=0.8,validation=0.1,test=0.1",
                         help="fractions by a stable hash of the path (default %(default)s)")
    convert.add_argument("--split-counts", help="exact records per class, e.g. train=1000,validation=500,test=500")
    convert.add_argument("--split-counts-allow-fewer", action="store_true",
                         help="with --split-counts: a class with fewer images fills the splits in order with what "
                              "it has (default: refuse)")
    convert.add_argument("--channels", type=int, choices=(1, 3), help="3 = RGB (default; IDX: 1)")
    convert.add_argument("--image-format", choices=("passthrough", "jpeg", "png", "raw"),
                         help="passthrough (default) keeps valid JPEGs byte for byte; IDX default: png")
    convert.add_argument("--max-side", type=int, help="downscale so the longer side is at most N pixels")
    convert.add_argument("--quality", type=int, default=95, help="JPEG quality when re-encoding (default 95)")
    convert.add_argument("--shard-size-mb", type=float, default=128.0, help="target shard size (default 128)")
    convert.add_argument("--workers", type=int, default=0, help="local worker processes (default: one per core)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    convert.set_defaults(handler=_convert)

    inspect = commands.add_parser("inspect", help="show a dataset's splits, classes and statistics")
    inspect.add_argument("data")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(handler=_inspect)

    verify = commands.add_parser("verify", help="check checksums, record CRCs, counts and images of a dataset")
    verify.add_argument("data")
    verify.add_argument("--no-decode", action="store_true", help="skip decoding the images (faster)")
    verify.set_defaults(handler=_verify, uses_tensorflow=True)

    preview = commands.add_parser("preview", help="a grid of images (and augmented versions) as a PNG")
    preview.add_argument("data")
    preview.add_argument("--out", required=True, help="the PNG file to write")
    preview.add_argument("--split", default="train")
    preview.add_argument("--augment", help="none, a preset (seed004) or ImageDataGenerator arguments as JSON")
    preview.add_argument("--images", type=int, default=4, help="rows (default 4)")
    preview.add_argument("--variants", type=int, default=5, help="augmented versions per image (default 5)")
    preview.add_argument("--image-size", type=int, default=150)
    preview.add_argument("--seed", type=int, default=0)
    preview.set_defaults(handler=_preview, uses_tensorflow=True)

    serve = commands.add_parser("serve-data", help="start a tf.data service dispatcher and workers here")
    serve.add_argument("--port", type=int, default=5050)
    serve.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    serve.set_defaults(handler=_serve_data, uses_tensorflow=True)

    train = commands.add_parser("train", help="train a tutorial model on a converted dataset")
    train.add_argument("data")
    train.add_argument("--model", default="small_convnet",
                       help="small_convnet (default), book_convnet, mnist_convnet, fashion_cnn, transfer, fine_tune, "
                            "features")
    train.add_argument("--out", required=True, help="the run folder to write")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, help="default 32 (64 for the features head)")
    train.add_argument("--image-size", type=int, help="default: 150 (28 for MNIST models, 160 for transfer)")
    train.add_argument("--augment", default="none", help="none, seed004 or ImageDataGenerator arguments as JSON")
    train.add_argument("--augment-on", default="auto", choices=("auto", "model", "pipeline"),
                       help="auto: in the model with a GPU, else in the CPU pipeline")
    train.add_argument("--optimizer", help="default: the tutorial's (rmsprop or adam)")
    train.add_argument("--lr", type=float, help="learning rate (default: the tutorial's)")
    train.add_argument("--patience", type=int, help="early stopping after N epochs without better val_loss")
    train.add_argument("--mixed-precision", action="store_true")
    train.add_argument("--jit", action="store_true", help="XLA-compile the model")
    train.add_argument("--seed", type=int)
    train.add_argument("--base", default="vgg16", help="transfer base: vgg16, mobilenet_v2, efficientnet_b0, resnet50")
    train.add_argument("--weights", default="imagenet", help="imagenet (downloads), a weights file, or none")
    train.add_argument("--unfreeze", type=int, default=3, help="fine_tune: top layers of the base to train")
    train.add_argument("--init-from", help="fine_tune: a finished transfer run to continue from (its model.keras)")
    train.add_argument("--steps-per-epoch", type=int, help="limit each epoch (quick trials)")
    train.add_argument("--cache", action="store_true", help="keep decoded images in memory after epoch 1")
    train.set_defaults(handler=_train, uses_tensorflow=True)

    evaluate = commands.add_parser("evaluate", help="a run's loss and accuracy on a dataset split")
    evaluate.add_argument("run")
    evaluate.add_argument("data")
    evaluate.add_argument("--split", default="test")
    evaluate.set_defaults(handler=_evaluate, uses_tensorflow=True)

    predict = commands.add_parser("predict", help="classify images, folders or a converted split with a run")
    predict.add_argument("run")
    predict.add_argument("paths", nargs="+")
    predict.add_argument("--split", default="test", help="the split, when a path is a converted dataset")
    predict.add_argument("--csv", help="write Kaggle's submission format (id,label) here")
    predict.set_defaults(handler=_predict, uses_tensorflow=True)
    return parser


def _sample_data(args, _extra) -> None:
    from shardflow.sample_data import write_sample_data

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
    from shardflow.beam_jobs import splits
    from shardflow.beam_jobs.convert import ConversionInterrupted, ConvertOptions, convert

    if args.max_side is not None and args.max_side < 1:
        raise UsageError("--max-side must be a positive number of pixels")
    if not 1 <= args.quality <= 100:
        raise UsageError("--quality must be between 1 and 100")
    if args.shard_size_mb <= 0:
        raise UsageError("--shard-size-mb must be positive")
    if args.split_counts_allow_fewer and not args.split_counts:
        raise UsageError("--split-counts-allow-fewer goes with --split-counts")
    options = ConvertOptions(
        name=args.name,
        layout=args.layout,
        unlabeled=args.unlabeled,
        class_names=tuple(c.strip() for c in args.class_names.split(",")) if args.class_names else None,
        splits=splits.parse_splits(args.splits),
        split_counts=splits.parse_split_counts(args.split_counts) if args.split_counts else None,
        split_counts_allow_fewer=args.split_counts_allow_fewer,
        channels=args.channels,
        image_format=args.image_format,
        max_side=args.max_side,
        quality=args.quality,
        shard_size_mb=args.shard_size_mb,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    try:
        info = convert(args.src, args.out, options, beam_args)
    except ConversionInterrupted as interrupted:
        print(f"shardflow convert: {interrupted}", file=sys.stderr)
        return INTERRUPTED
    print(_summary_text(info, args.out))


def _inspect(args, _extra) -> None:
    meta = metadata.read(args.data)
    if args.json:
        print(json.dumps(_inspect_json(meta), indent=1))
    else:
        print(_inspect_text(meta))


def _verify(args, _extra) -> int:
    from shardflow.verify import verify

    report = verify(args.data, decode_images=not args.no_decode)
    for problem in report.problems:
        print(f"{args.data}: {problem}")
    for shard in report.shards:
        for problem in shard.problems:
            print(f"{shard.split}: {shard.filename}: {problem}")
    if report.ok:
        print(f"{args.data}: OK, {report.records} records in {len(report.shards)} shards verified")
        return 0
    bad = sum(1 for s in report.shards if s.problems)
    print(f"{args.data}: FAILED, {bad} of {len(report.shards)} shards damaged", file=sys.stderr)
    return 1


def _preview(args, _extra) -> None:
    from shardflow.pipeline.preview import preview_grid

    if args.images < 1 or args.variants < 0 or args.image_size < 8:
        raise UsageError("--images must be >= 1, --variants >= 0 and --image-size >= 8")
    out = preview_grid(args.data, args.out, split=args.split, augment=args.augment, images=args.images,
                       variants=args.variants, image_size=args.image_size, seed=args.seed)
    print(f"wrote {out}")


def _serve_data(args, _extra) -> None:
    from shardflow.pipeline.service import serve

    serve(args.port, args.workers)


def _train(args, _extra) -> None:
    from shardflow.trainers.train import TrainOptions, train

    options = TrainOptions(
        model=args.model, epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
        augment=args.augment, augment_on=args.augment_on, optimizer=args.optimizer, lr=args.lr,
        patience=args.patience, mixed_precision=args.mixed_precision, jit=args.jit, seed=args.seed,
        base=args.base, weights=args.weights, unfreeze=args.unfreeze, init_from=args.init_from,
        steps_per_epoch=args.steps_per_epoch,
        cache=args.cache,
    )
    metrics = train(args.data, args.out, options)
    rates = metrics["images_per_second"]
    wait = metrics["input_wait_fraction"]
    print(f"{args.out}: test accuracy {metrics['test_accuracy']:.3f}, loss {metrics['test_loss']:.3f} "
          f"({metrics['evaluated_on']} split), {metrics['epochs_run']} epochs in {metrics['seconds']:.0f} s; "
          f"last epoch {rates[-1]:.0f} images/s" + (f", {wait[-1]:.0%} of step time waiting for input" if wait else ""))


def _evaluate(args, _extra) -> None:
    from shardflow.trainers.predict import evaluate

    result = evaluate(args.run, args.data, args.split)
    print(f"{args.split}: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
          f"on {result['num_examples']} images")


def _predict(args, _extra) -> None:
    from shardflow.trainers.predict import predict, run_info, write_submission

    predictions = predict(args.run, args.paths, args.split)
    for prediction in predictions:
        print(prediction.sentence())
    if args.csv:
        write_submission(predictions, args.csv, run_info(args.run)["class_names"])
        print(f"wrote {len(predictions)} predictions to {args.csv}")


def _inspect_json(meta: metadata.DatasetMetadata) -> dict:
    info = dict(meta.info)
    info["splits"] = {
        name: {key: value for key, value in split.items() if key != "split"} for name, split in meta.splits.items()
    }
    return info


def _summary_text(info: dict, out: str) -> str:
    rate = info["num_inputs"] / max(info["seconds"], 1e-9)
    lines = [
        f"converted {info['num_inputs']} inputs in {info['seconds']:.1f} s ({rate:.0f} inputs/s): "
        f"{info['num_records']} records, {info['num_rejected']} rejected"
        + (f" (reasons in {out}/{metadata.REJECTS})" if info["num_rejected"] else "")
        + (f", {info['num_unselected']} not selected by --split-counts" if info["num_unselected"] else "")
    ]
    if info.get("debris"):
        lines.append(f"  skipped {len(info['debris'])} macOS/Windows system file(s) such as {info['debris'][0]!r} "
                     f"(listed in {out}/{metadata.SHARDFLOW_INFO})")
    for name, split in info["splits"].items():
        lines.append(f"  {name:<11} {split['num_examples']:>7} records in {len(split['shards'])} shard(s)  "
                     f"({_class_counts(split['label_counts'], info['class_names'])})")
    lines += [f"warning: {warning}" for warning in info.get("warnings", [])]
    lines.append(f"dataset: {out}")
    return "\n".join(lines)


def _class_counts(counts: dict[str, int], class_names: list[str]) -> str:
    """Records per class of one split; with many classes, their range instead of every class."""
    if len(counts) <= SUMMARY_MAX_CLASSES and len(class_names) <= SUMMARY_MAX_CLASSES:
        return ", ".join(f"{c} {n}" for c, n in counts.items())
    values = [counts.get(c, 0) for c in class_names] or list(counts.values())
    present = sum(1 for v in values if v)
    return (f"{present} of {len(values)} classes, {min(values)}-{max(values)} per class; "
            "`shardflow inspect` lists them")


def _inspect_text(meta: metadata.DatasetMetadata) -> str:
    info = meta.info
    lines = [
        f"{meta.data_dir}: dataset {meta.name!r}",
        f"  classes ({len(meta.class_names)}): {', '.join(meta.class_names) or '(unlabeled)'}",
        f"  images: {info['image_format']}, {meta.channels} channel(s)"
        + (f", longer side <= {info['max_side']}" if info.get("max_side") else ""),
        f"  inputs: {info['num_inputs']}  records: {info['num_records']}  rejected: {info['num_rejected']}"
        + (f"  unselected: {info['num_unselected']}" if info.get("num_unselected") else ""),
    ]
    labels = [f"<{metadata.SIZE_BINS[0]}"] + [f"{a}-{b - 1}" for a, b in zip(metadata.SIZE_BINS, metadata.SIZE_BINS[1:])] + [f">={metadata.SIZE_BINS[-1]}"]
    for name, split in meta.splits.items():
        mb = split["num_bytes"] / 2**20
        lines.append(f"\n  {name}: {split['num_examples']} records, {len(split['shards'])} shard(s), {mb:.1f} MB")
        lines.append("    per class: " + ", ".join(f"{c} {n}" for c, n in split["label_counts"].items()))
        lines.append("    mean: " + " ".join(f"{v:.1f}" for v in split["mean"])
                     + "   std: " + " ".join(f"{v:.1f}" for v in split["std"]))
        peak = max(split["size_histogram"]) or 1
        lines.append("    longer side (px):")
        for label, count in zip(labels, split["size_histogram"]):
            if count:
                lines.append(f"      {label:>9} {count:>7}  {'#' * max(1, round(30 * count / peak))}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
